"""Checkpoint and resume: a run restored from step k continues bit-identically."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.config_loading import load_config, to_plain
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, EncoderConfig
from arc_jax.train.checkpoint import TrainCheckpoints, abstract_like
from arc_jax.train.optimizer import OptimizerConfig
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.step import init_state, jit_train_step
from one_step import random_params

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"
OPT = OptimizerConfig(encoder_lr=1e-2, special_lr=1e-2, projector_lr=1e-2, warmup_steps=2, max_steps=20,
                      initial_lr=1e-3, final_lr=1e-3)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    config = load_config(CONFIG, [f"--config.data.dir={tmp_path / 'data'}"])
    enc_cfg = EncoderConfig.from_dict(config.model.encoder.to_dict())
    dec_cfg = BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict())
    run = parse_run_config(config, device_count=1)
    batches = run_batches(run)
    first = next(run_batches(run))[0]
    encoder, decoder = ARCEncoder(enc_cfg), Decoder(dec_cfg)
    params, dec_params = random_params(encoder, decoder, first)
    step = jit_train_step(encoder, decoder, 0, OPT)

    state = init_state(jax.tree.map(jnp.array, params))
    checkpoints = TrainCheckpoints(tmp_path / "run")
    for i in range(1, 6):
        state, _ = step(state, dec_params, next(batches)[0])
        if i == 3:
            checkpoints.save(i, state, batches.get_state(), to_plain(config))
    checkpoints.wait()
    uninterrupted = jax.device_get(state)

    # A new process would rebuild everything from the config and the checkpoint.
    restored_checkpoints = TrainCheckpoints(tmp_path / "run")
    assert restored_checkpoints.latest_step == 3
    fresh = init_state(jax.tree.map(jnp.array, params))
    state, data_state, saved_config = restored_checkpoints.restore(abstract_like(fresh))
    assert saved_config["data"]["sources"] == config.data.sources
    resumed_batches = run_batches(run)
    resumed_batches.set_state(data_state)
    for _ in range(2):
        state, _ = step(state, dec_params, next(resumed_batches)[0])
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(uninterrupted)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    checkpoints.close()
    restored_checkpoints.close()


def test_a_state_saved_with_one_adam_count_per_head_resumes_with_a_count_per_part(tmp_path):
    """Checkpoints saved before a head's parts (<Rec>, <Cont>, projector) had their own Adam counts
    hold one count per head: restore reads that layout and gives each part its head's count."""
    from arc_jax.train import optimizer
    from arc_jax.train.step import TrainState

    rng = np.random.default_rng(0)
    params = {"layers": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
              **{f"decoder_{d}": {"rec_tok": rng.normal(size=4).astype(np.float32),
                                  "cont_tok": rng.normal(size=4).astype(np.float32),
                                  "layer1": rng.normal(size=(4, 2)).astype(np.float32)} for d in range(2)}}
    grads = jax.tree.map(lambda x: jnp.ones_like(x), params)
    state = init_state(jax.tree.map(jnp.array, params))
    update = jax.jit(lambda s, g, d: TrainState(*optimizer.update(g, s.opt, s.params, d, OPT)[:2], s.bad_steps,
                                                  s.skipped), static_argnums=2)
    for d in (0, 0, 1):
        state = update(state, grads, d)
    old_layout = state._replace(opt=state.opt._replace(adam=optimizer.one_count_per_head(state.opt.adam)))
    assert np.ndim(old_layout.opt.adam["decoder_0"].count) == 0  # what such a checkpoint holds
    checkpoints = TrainCheckpoints(tmp_path / "run")
    checkpoints.save(3, old_layout, {}, {})
    checkpoints.wait()

    restored, _, _ = checkpoints.restore(abstract_like(state))
    assert isinstance(restored, TrainState)
    for d, n in (("decoder_0", 2), ("decoder_1", 1)):
        assert {k: int(v) for k, v in restored.opt.adam[d].count.items()} == {"rec_tok": n, "cont_tok": n,
                                                                             "projector": n}
    for a, b in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(jax.device_get(state)), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # Each count its own buffer, so the state can be donated, as the train step does.
    counts = jax.tree.leaves([g.count for g in restored.opt.adam.values()])
    assert len({c.unsafe_buffer_pointer() for c in counts}) == len(counts) == 7
    donated = jax.jit(lambda s: update(s, grads, 1), donate_argnums=0)(restored)
    assert int(donated.opt.adam["decoder_1"].count["rec_tok"]) == 2
    # A checkpoint in this layout restores as it is.
    checkpoints.save(4, state, {}, {})
    checkpoints.wait()
    again, _, _ = checkpoints.restore(abstract_like(state), 4)
    for a, b in zip(jax.tree.leaves(jax.device_get(again)), jax.tree.leaves(jax.device_get(state)), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    checkpoints.close()
