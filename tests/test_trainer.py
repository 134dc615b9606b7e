"""`arc-jax train` end to end on tiny_cpu: logs, checkpoints, exact resume from the workdir."""

import shutil
from pathlib import Path

import jax
import numpy as np

from arc_jax.cli import main
from arc_jax.config_loading import load_config
from arc_jax.train.checkpoint import TrainCheckpoints

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


def saved_state(workdir, step) -> dict:
    import orbax.checkpoint as ocp

    checkpoints = TrainCheckpoints(workdir)
    restored = checkpoints.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
    checkpoints.close()
    return jax.device_get(restored.state)


def test_train_writes_logs_and_checkpoints_and_resumes_exactly(tmp_path, capsys):
    data = f"--config.data.dir={tmp_path / 'data'}"
    args = ["train", "--config", str(CONFIG), "--workdir", str(tmp_path / "run"), "--log-every", "3",
            "--config.max_steps=9", "--config.checkpoint_every=3", "--config.optimizer.warmup_steps=2", data]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step      9  loss" in out and "done: 9 steps" in out
    run = tmp_path / "run"
    assert list((run / "tensorboard").iterdir()) and (run / "decoder_0" / "arc_jax.json").is_file()
    final = jax.tree.leaves(saved_state(run, 9))

    # Lose the last checkpoint (as if killed after step 8): the rerun resumes from step 6.
    shutil.rmtree(run / "checkpoints" / "9")
    assert main(args) == 0
    assert "resumed from step 6" in capsys.readouterr().out
    for a, b in zip(jax.tree.leaves(saved_state(run, 9)), final):
        assert np.array_equal(np.asarray(a), np.asarray(b))

    # The run is usable as it is: its latest encoder and the decoder it trained against.
    import arc_jax

    enc, dec = arc_jax.load_encoder(run), arc_jax.load_decoder(run)
    for a, b in zip(jax.tree.leaves(enc.params), jax.tree.leaves(saved_state(run, 9)["params"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    block = enc.compress([[5, 6, 7, 8, 9, 10, 11, 12]])[0]
    assert dec.logits([[1, 40, 41], block, [42, 43]]).shape == (5, dec.config.vocab_size)

    # One step of it, as `arc-jax eval --step 6` chooses it: <run>/checkpoints/6 reads as that step.
    from arc_jax.cli.evaluate import checkpoint_of_step

    earlier = arc_jax.load_encoder(checkpoint_of_step(run, 6))
    for a, b in zip(jax.tree.leaves(earlier.params), jax.tree.leaves(saved_state(run, 6)["params"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    try:
        checkpoint_of_step(run, 7)
        raise AssertionError("step 7 does not exist")
    except ValueError as e:
        assert "no checkpoint of that step (its steps: 3, 6, 9)" in str(e)


def test_config_has_the_training_fields():
    config = load_config(CONFIG)
    assert config.max_steps > 0 and config.checkpoint_every > 0 and isinstance(config.seed, int)


def test_config_errors_stop_before_anything_runs(tmp_path, capsys):
    code = main(["train", "--config", str(CONFIG), "--workdir", str(tmp_path / "run"), "--config.max_steps=5"])
    assert code == 2 and "config.optimizer.warmup_steps=10" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_against_a_converted_decoder_reads_it_in_place(tmp_path):
    import arc_jax
    from arc_jax.train.trainer import train

    first = load_config(CONFIG, [f"--config.data.dir={tmp_path / 'data'}", "--config.max_steps=2",
                                 "--config.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
                                 "--config.eval.every=0"])
    train(first, tmp_path / "first")
    config = load_config(CONFIG, [f"--config.data.dir={tmp_path / 'data'}", "--config.max_steps=2",
                                  "--config.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
                                  "--config.eval.every=0", f"--config.model.decoders.0.path={tmp_path / 'first'}"
                                  "/decoder_0"])
    train(config, tmp_path / "second")
    assert not (tmp_path / "second" / "decoder_0").exists()  # not copied
    a, b = arc_jax.load_decoder(tmp_path / "first"), arc_jax.load_decoder(tmp_path / "second")
    assert all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True))
