"""Saving fails cleanly (issue 21, point 3): a full disk or a read-only checkpoints folder gives one
error line and a non-zero exit, leaves the previous checkpoint intact and no half-written folder,
and the same command resumes once there is room again.

The disk is a small tmpfs mounted for the test (root only: elsewhere these tests skip); the
read-only folder is a read-only bind mount as root (root ignores permission bits) and a folder
without write permission otherwise. tiny_cpu runs to 4 steps with a checkpoint every 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arc_jax.cli import main  # noqa: E402
from test_damaged_checkpoints import same_tree  # noqa: E402
from test_trainer import CONFIG, saved_state  # noqa: E402

ROOT = os.geteuid() == 0


def train_args(workdir: Path, data_dir: Path) -> list[str]:
    return ["train", "--config", str(CONFIG), "--workdir", str(workdir), "--log-every", "100",
            "--config.max_steps=4", "--config.checkpoint_every=2", "--config.optimizer.warmup_steps=1",
            "--config.eval.every=0", f"--config.data.dir={data_dir}"]


def stopped_at_step_2(run: Path, workdir: Path) -> Path:
    """A copy of the reference run as it was after its step-2 checkpoint."""
    shutil.copytree(run, workdir, ignore=lambda folder, names: ["4"] if folder.endswith("checkpoints") else [])
    return workdir


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir of an uninterrupted run to 4 steps on an ordinary disk, its data folder)."""
    root = tmp_path_factory.mktemp("save_failures")
    assert main(train_args(root / "run", root / "data")) == 0
    return root / "run", root / "data"


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs; the test fills it with `fill(leave)`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not ROOT or not mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)):
        pytest.skip("mounting a small tmpfs needs root")

    def fill(leave: int) -> None:
        free = shutil.disk_usage(disk).free
        with (disk / "filler").open("wb") as f:
            f.truncate(0)
            os.posix_fallocate(f.fileno(), 0, max(0, free - leave))

    try:
        yield disk, fill
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def one_error(capsys, command: str = "train") -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"arc-jax {command}: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def test_a_disk_full_before_a_save_stops_in_one_line_and_resumes_once_there_is_room(reference, small_disk, capsys):
    run, data = reference
    disk, fill = small_disk
    workdir = stopped_at_step_2(run, disk / "run")
    fill(leave=64 << 10)
    assert main(train_args(workdir, data)) == 2
    line = one_error(capsys)
    assert "cannot save checkpoint 4: " in line and "MB free and the last checkpoint took" in line, line
    assert "the last checkpoint, step 2, is intact" in line and "run the same command again" in line
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]  # nothing half-written

    (disk / "filler").unlink()
    assert main(train_args(workdir, data)) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert same_tree(saved_state(workdir, 4), saved_state(run, 4))


def test_a_disk_that_fills_during_the_asynchronous_write_stops_in_one_line(reference, small_disk, capsys):
    """The first save is not checked for room (no earlier checkpoint tells its size): the disk fills
    while Orbax writes it in the background, and the failure surfaces at the next save."""
    run, data = reference
    disk, fill = small_disk
    fill(leave=folder_bytes(run / "decoder_0") + (256 << 10))  # the decoder fits, a checkpoint does not
    workdir = disk / "run"
    assert main(train_args(workdir, data)) == 2
    line = one_error(capsys)
    assert "cannot save checkpoint 2: " in line and "No space left on device" in line, line
    assert "no earlier checkpoint" in line
    assert list((workdir / "checkpoints").iterdir()) == []  # its half-written folder removed

    (disk / "filler").unlink()
    assert main(train_args(workdir, data)) == 0
    assert "resumed from" not in capsys.readouterr().out
    assert same_tree(saved_state(workdir, 4), saved_state(run, 4))


def test_a_read_only_checkpoints_folder_stops_in_one_line_and_resumes_once_writable(reference, tmp_path, capsys):
    run, data = reference
    workdir = stopped_at_step_2(run, tmp_path / "run")
    folder = workdir / "checkpoints"
    if ROOT:
        if not (mount("--bind", str(folder), str(folder)) and mount("-o", "remount,bind,ro", str(folder))):
            pytest.skip("a read-only bind mount failed")
    else:
        folder.chmod(0o555)
    try:
        assert main(train_args(workdir, data)) == 2
        line = one_error(capsys)
        assert "cannot save checkpoint 4: " in line and ("Read-only file system" in line or "Permission denied" in line)
        assert "the last checkpoint, step 2, is intact" in line
    finally:
        if ROOT:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["2"]
    assert main(train_args(workdir, data)) == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert same_tree(saved_state(workdir, 4), saved_state(run, 4))
