"""A workdir remembers its run (issue 21, point 2): restarting it with a config whose model, data,
optimiser or seed differs stops with one line listing each differing field (old -> new), before
anything is built; the fields of resume.RESUMABLE may change; --accept-config-changes resumes anyway."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arc_jax.cli import main  # noqa: E402
from arc_jax.config_loading import load_config, to_plain  # noqa: E402
from arc_jax.train.resume import RESUMABLE, config_changes, flat_fields  # noqa: E402
from test_trainer import CONFIG  # noqa: E402


def saved(*overrides: str) -> dict:
    """The config as a checkpoint holds it."""
    import json

    return json.loads(json.dumps(to_plain(load_config(CONFIG, list(overrides)))))


def test_the_same_config_has_no_changes():
    assert config_changes(saved(), load_config(CONFIG)) == []


def test_model_data_optimiser_and_seed_changes_are_listed_old_to_new():
    new = load_config(CONFIG, ["--config.seed=3", "--config.model.encoder.backbone.n_layers=3",
                               "--config.optimizer.encoder_lr=0.5", "--config.data.max_len=32",
                               "--config.model.decoders.0.head=1"])
    assert config_changes(saved(), new) == [
        "data.max_len 64 -> 32", "model.decoders.0.head 0 -> 1", "model.encoder.backbone.n_layers 2 -> 3",
        "optimizer.encoder_lr 0.01 -> 0.5", "seed 0 -> 3"]


def test_resumable_fields_may_change():
    new = load_config(CONFIG, ["--config.max_steps=500", "--config.checkpoint_every=7", "--config.keep_checkpoints=9",
                               "--config.log_every=1", "--config.eval.every=3", "--config.eval.batches=1",
                               "--config.max_bad_steps=2", "--config.mesh_shape=[1,1,1]", "--config.remat_policy=full",
                               "--config.data.worker_count=2"])
    assert config_changes(saved(), new) == []
    # Every resumable field exists in a training config (no stale names in the stated list).
    fields = flat_fields(saved())
    assert all(any(f == name or f.startswith(name + ".") for f in fields) for name in RESUMABLE)


def test_a_field_only_one_side_has_is_a_change():
    old = saved()
    del old["optimizer"]["clip_norm"]
    old["grad_accum_legacy"] = 2
    assert config_changes(old, load_config(CONFIG)) == ["grad_accum_legacy 2 -> (absent)",
                                                        "optimizer.clip_norm (absent) -> 1.0"]


@pytest.fixture(scope="module")
def run_of_two_steps(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("resume_config")
    args = ["train", "--config", str(CONFIG), "--workdir", str(root / "run"), "--log-every", "100",
            "--config.max_steps=2", "--config.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
            "--config.eval.every=0", f"--config.data.dir={root / 'data'}"]
    assert main(args) == 0
    return root / "run", args


def test_restart_with_another_model_or_seed_stops_in_one_line(run_of_two_steps, tmp_path, capsys):
    run, args = run_of_two_steps
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    before = sorted(p.name for p in workdir.rglob("*"))
    capsys.readouterr()
    args = [a.replace(str(run), str(workdir)) for a in args]
    assert main([*args, "--config.model.encoder.backbone.n_layers=3", "--config.seed=1"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"arc-jax train: error: {workdir}: this config is not the run saved there (checkpoint "
                               "2): model.encoder.backbone.n_layers 2 -> 3; seed 0 -> 1. Only max_steps"), lines
    assert "--accept-config-changes" in lines[0] and "Traceback" not in out + err
    assert sorted(p.name for p in workdir.rglob("*")) == before  # nothing written


def test_resumable_changes_resume_and_accepted_ones_are_printed(run_of_two_steps, tmp_path, capsys):
    run, args = run_of_two_steps
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    args = [a.replace(str(run), str(workdir)) for a in args]
    capsys.readouterr()
    assert main([*args, "--config.max_steps=3", "--config.log_every=1", "--config.optimizer.encoder_lr=0.02",
                 "--accept-config-changes"]) == 0
    out = capsys.readouterr().out
    assert "config change accepted (--accept-config-changes): optimizer.encoder_lr 0.01 -> 0.02" in out
    assert "resumed from step 2" in out and "done: 1 steps" in out
    # The workdir now remembers the accepted run: the same command resumes without the flag.
    assert main([*args, "--config.max_steps=3", "--config.optimizer.encoder_lr=0.02"]) == 0
    assert "config change accepted" not in capsys.readouterr().out


def test_an_accepted_change_the_saved_input_state_cannot_follow_stops_in_one_line(run_of_two_steps, tmp_path,
                                                                                  capsys):
    """Another seed reshuffles the data: the saved pipeline position means nothing in it."""
    run, args = run_of_two_steps
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    args = [a.replace(str(run), str(workdir)) for a in args]
    capsys.readouterr()
    assert main([*args, "--config.max_steps=3", "--config.seed=5", "--accept-config-changes"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "input pipeline's saved state" in lines[0] and "new workdir" in lines[0], lines
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
