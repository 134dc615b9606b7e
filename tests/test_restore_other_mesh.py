"""A run checkpointed on one mesh resumes on another: `arc-jax train` with 8 fake CPU devices.

A reference run trains tiny_cpu (8 rows a batch) to MAX_STEPS on a (data=8) mesh, checkpointing
every MAX_STEPS / 2. A copy of its workdir without the last checkpoint is resumed on (data=2,
fsdp=2, tensor=2): Orbax reshards the saved state onto the new mesh, the input pipeline restarts
where it was saved, and the run must end where the reference ended, up to the reductions'
summation order (it differs between meshes).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arc_jax.config_loading import load_config  # noqa: E402
from arc_jax.demo.synthetic import build_tiny_data  # noqa: E402
from test_multiprocess_training import (CONFIG, clean_environment, compare_params, losses, report,  # noqa: E402
                                        run_all, saved_data_state, saved_params)
from xla_flags import with_devices  # noqa: E402

MAX_STEPS, CHECKPOINT_EVERY = 4, 2
OVERRIDES = [f"--config.max_steps={MAX_STEPS}", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
             "--config.optimizer.warmup_steps=1", "--config.eval.every=0", "--config.data.shape.encoder_rows=8",
             "--config.data.shape.decoder_rows=8"]
OTHER_MESH = "[2,2,2]"
DEADLINE = 480  # seconds a run may take (cold compilation cache, busy 2-core machine)


def environment() -> dict[str, str]:
    env = clean_environment(8)
    del env["JAX_NUM_CPU_DEVICES"]
    env["XLA_FLAGS"] = with_devices(8)
    return env


def train(workdir: Path, data_dir: Path, logs: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-u", "-m", "arc_jax.cli", "train", "--config", str(CONFIG), "--workdir", str(workdir),
           "--log-every", "1", *OVERRIDES, f"--config.data.dir={data_dir}", *extra]
    result = run_all({workdir.name: (cmd, environment())}, logs, DEADLINE)
    assert result[workdir.name]["returncode"] == 0, report(result)
    return result[workdir.name]


def test_mesh_shape_override_parses():
    assert list(load_config(CONFIG, [f"--config.mesh_shape={OTHER_MESH}"]).mesh_shape) == [2, 2, 2]


def test_resume_on_another_mesh_matches_the_uninterrupted_run(tmp_path):
    data_dir = tmp_path / "data"
    build_tiny_data(str(data_dir), **load_config(CONFIG).data.corpus)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    ref = train(reference, data_dir, tmp_path / "logs", "--config.mesh_shape=[8,1,1]")
    assert f"done: {MAX_STEPS} steps" in ref["output"]
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / str(MAX_STEPS))  # as if stopped after the middle checkpoint

    out = train(resumed, data_dir, tmp_path / "logs", f"--config.mesh_shape={OTHER_MESH}")
    print(f"[restore_other_mesh] reference {ref['seconds']:.0f} s, resumed on {OTHER_MESH} {out['seconds']:.0f} s")
    assert f"resumed from step {CHECKPOINT_EVERY} in" in out["output"], out["output"][-3000:]
    assert f"done: {MAX_STEPS - CHECKPOINT_EVERY} steps" in out["output"]
    logged, expected = losses(out["output"]), losses(ref["output"])
    assert sorted(logged) == list(range(CHECKPOINT_EVERY + 1, MAX_STEPS + 1))
    for step, loss in logged.items():
        assert abs(loss - expected[step]) <= 1e-3, (step, loss, expected[step])

    # The resumed half ran on the other mesh, its input pipeline continued exactly, and the
    # parameters agree up to summation order (observed: max 2.4e-7, 1.5e-6 of the distance moved
    # between the two checkpoints; a resume that saw other data or lost the optimiser moments is
    # ~0.1-1 on that scale).
    import json

    config = json.loads((resumed / "checkpoints" / str(MAX_STEPS) / "config" / "metadata").read_text())
    assert config["mesh_shape"] == [2, 2, 2]
    assert saved_data_state(resumed, MAX_STEPS) == saved_data_state(reference, MAX_STEPS)
    a, b = saved_params(reference, MAX_STEPS), saved_params(resumed, MAX_STEPS)
    diff = compare_params(a, b, saved_params(reference, CHECKPOINT_EVERY))
    print(f"[restore_other_mesh] params: {diff}")
    assert diff["max_diff"] < 1e-4 and diff["relative"] < 1e-3, diff
    assert int(b["opt"]["step"]) == MAX_STEPS and int(b["skipped"]) == 0
