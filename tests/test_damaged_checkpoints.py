"""Damaged checkpoints (issue 21, point 1): a restart walks back from the newest checkpoint to the
newest intact one, names in one warning line what it skipped and why, and ends where an
uninterrupted run ends; readers of the workdir (load_encoder, generate) do the same; with no intact
checkpoint, one line says so and nothing is moved.

Damage as clusters make it: files truncated (an interrupted copy, a full disk), a step without
Orbax's commit marker (a save killed before it finished). One reference run of tiny_cpu to 8 steps
(checkpoints 2, 4, 6, 8) is copied and damaged by each test.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arc_jax.cli import main  # noqa: E402
from test_trainer import CONFIG, saved_state  # noqa: E402

STEPS = 8


def train_args(workdir: Path, data_dir: Path) -> list[str]:
    return ["train", "--config", str(CONFIG), "--workdir", str(workdir), "--log-every", "100",
            f"--config.max_steps={STEPS}", "--config.checkpoint_every=2", "--config.keep_checkpoints=4",
            "--config.optimizer.warmup_steps=2", "--config.eval.every=0", f"--config.data.dir={data_dir}"]


def truncate(folder: Path) -> None:
    """Every file of `folder` cut to half its size, as an interrupted copy leaves them."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("r+b") as f:
                f.truncate(path.stat().st_size // 2)


def error_lines(err: str) -> list[str]:
    """stderr without the progress bars of convert/export (tqdm: "... B/s]", carriage returns)."""
    return [line for line in err.strip().splitlines() if line.strip() and not line.rstrip().endswith("B/s]")]


def same_tree(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def listing(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir of an uninterrupted run to STEPS, its data folder)."""
    root = tmp_path_factory.mktemp("damaged")
    assert main(train_args(root / "run", root / "data")) == 0
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["2", "4", "6", "8"]
    return root / "run", root / "data"


def copy_of(reference_run: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    return workdir


def test_restart_walks_back_over_damaged_steps_and_ends_bit_identical(reference, tmp_path, capsys, caplog):
    run, data = reference
    workdir = copy_of(run, tmp_path)
    truncate(workdir / "checkpoints" / "8")  # a full disk / an interrupted copy
    (workdir / "checkpoints" / "6" / "commit_success.txt").unlink()  # a save killed before it committed

    with caplog.at_level(logging.WARNING, logger="arc_jax.train"):
        assert main(train_args(workdir, data)) == 0
    out, err = capsys.readouterr()
    warnings = [r.getMessage() for r in caplog.records if r.name == "arc_jax.train"]
    assert len(warnings) == 1, warnings
    assert "8 (" in warnings[0] and "cannot restore" in warnings[0], warnings[0]
    assert "6 (no commit_success.txt" in warnings[0] and warnings[0].endswith("resuming from step 4")
    assert "\n" not in warnings[0]
    assert "resumed from step 4 in" in out and "Traceback" not in err
    # The damaged steps are kept aside, and the run saved its own 6 and 8 again.
    assert sorted(p.name for p in (workdir / "damaged_checkpoints").iterdir()) == ["6", "8"]
    for step in (6, 8):
        assert same_tree(saved_state(workdir, step), saved_state(run, step)), step


def test_a_save_killed_midway_is_cleaned_up_and_the_run_ends_bit_identical(reference, tmp_path, capsys, caplog):
    """What SIGKILL during Orbax's asynchronous save leaves, made deterministic: step 8 still in its
    temporary folder, half written. The restart removes it, resumes from 6 without a warning (nothing
    committed was skipped) and saves 8 as the uninterrupted run did."""
    run, data = reference
    workdir = copy_of(run, tmp_path)
    partial = workdir / "checkpoints" / "8.orbax-checkpoint-tmp"
    (workdir / "checkpoints" / "8").rename(partial)
    (partial / "commit_success.txt").unlink()
    truncate(partial / "state")
    with caplog.at_level(logging.WARNING, logger="arc_jax.train"):
        assert main(train_args(workdir, data)) == 0
    assert "resumed from step 6 in" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.name == "arc_jax.train"]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4", "6", "8"]
    assert same_tree(saved_state(workdir, 8), saved_state(run, 8))


def test_no_intact_checkpoint_stops_in_one_line_and_moves_nothing(reference, tmp_path, capsys):
    run, data = reference
    workdir = copy_of(run, tmp_path)
    for step in (2, 4, 6, 8):
        truncate(workdir / "checkpoints" / str(step) / "state")
    before = listing(workdir)
    assert main(train_args(workdir, data)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("arc-jax train: error: "), err
    assert "no checkpoint restores" in err[0] and all(f"{s} (" in err[0] for s in (2, 4, 6, 8)), err[0]
    assert "move the folder away to start the run afresh" in err[0]
    assert listing(workdir) == before


def test_load_encoder_and_generate_read_the_newest_intact_step(reference, tmp_path, capsys, caplog):
    import arc_jax

    run, data = reference
    workdir = copy_of(run, tmp_path)
    truncate(workdir / "checkpoints" / "8" / "state")
    before = listing(workdir)
    with caplog.at_level(logging.WARNING, logger="arc_jax.train"):
        encoder = arc_jax.load_encoder(workdir)
    assert same_tree(encoder.params, saved_state(run, 6)["params"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "arc_jax.train"]
    assert len(warnings) == 1 and "8 (" in warnings[0] and warnings[0].endswith("reading step 6"), warnings

    (tmp_path / "context.txt").write_text("Alice lives in Paris.")
    tokenizer = str(data / "tokenizer.model")
    assert main(["generate", "--encoder", str(workdir), "--decoder", str(workdir), "--encoder-tokenizer", tokenizer,
                 "--decoder-tokenizer", tokenizer, "--context", str(tmp_path / "context.txt"),
                 "--prompt", "Where does Alice live?", "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "Traceback" not in err
    assert listing(workdir) == before  # readers never move anything


def test_a_run_started_from_a_damaged_workdir_starts_from_its_newest_intact_step(reference, tmp_path, caplog):
    """config.init_encoder = a workdir whose newest checkpoint is damaged: step 6's encoder."""
    from arc_jax.config_loading import load_config
    from arc_jax.train.trainer import Trainer

    run, data = reference
    workdir = copy_of(run, tmp_path)
    truncate(workdir / "checkpoints" / "8" / "state")
    config = load_config(CONFIG, [f"--config.data.dir={data}", f"--config.init_encoder={workdir}",
                                  "--config.max_steps=2", "--config.optimizer.warmup_steps=1"])
    with caplog.at_level(logging.WARNING, logger="arc_jax.train"):
        trainer = Trainer(config, tmp_path / "fine_tuned")
    trainer.checkpoints.close()
    assert same_tree(trainer.state.params, saved_state(run, 6)["params"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "arc_jax.train"]
    assert len(warnings) == 1 and warnings[0].endswith("reading step 6"), warnings


def test_a_reader_with_no_intact_step_says_so_in_one_line(reference, tmp_path, capsys):
    run, _ = reference
    workdir = copy_of(run, tmp_path)
    for step in (2, 4, 6, 8):
        (workdir / "checkpoints" / str(step) / "config" / "metadata").write_text('{"model": ')
    assert main(["export", str(workdir), str(tmp_path / "out"), "--format", "released"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("arc-jax export: error: "), err
    assert "no checkpoint reads" in err[0] and "config: cannot restore" in err[0], err
    assert not (tmp_path / "out").exists()
