"""Exact resume after SIGKILL at any point, and SIGTERM (preemption) saves and exits.

`arc-jax train` on tiny_cpu runs as a subprocess, the way a cluster runs it. An uninterrupted
reference run goes to MAX_STEPS; other runs of the same command in other workdirs are killed at
several points (during start-up, right after a checkpoint step's log line, i.e. while its
asynchronous Orbax save is likely in flight, and at a random moment of training), restarted each
time, and must end with checkpoints bit-identical to the reference's: parameters, optimiser state,
counters and the input pipeline's state.

Every run gets the same environment (CPU, matmul precision "highest" and the persistent compilation
cache of conftest.py). The cache does not change numerics: an executable loaded from it is the one
XLA compiles for that program, so a run that compiles and a run that loads compute the same bits.
Which programs a run compiles depends on the cache's state (a cold cache compiles, a run after it
loads what the first stored), so runs mix both and the comparison checks it.

The kill points come from a seeded generator; where a kill lands in time still depends on the
machine's speed, so every run prints what it saw (pytest -s shows it).
"""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from arc_jax.config_loading import load_config
from arc_jax.train.checkpoint import TrainCheckpoints

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "tiny_cpu.py"
MAX_STEPS = 12
CHECKPOINT_EVERY = 2
OVERRIDES = [f"--config.max_steps={MAX_STEPS}", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
             "--config.optimizer.warmup_steps=2", "--config.eval.every=0"]
# Seconds a run may take to reach a line or to end. A cold compilation cache costs ~30 s of
# compiling on a 2-core machine, more when runs overlap.
DEADLINE = 300
STEP_LINE = re.compile(r"^step\s+(\d+)\s+loss ")
# The kill points' generator; KILL_RESUME_SEED=n tries other points (e.g. in a loop, to soak).
SEED = int(os.environ.get("KILL_RESUME_SEED", "1234"))


def _environment() -> dict[str, str]:
    """One environment for every run: what conftest.py sets for the test process, as variables."""
    env = dict(os.environ)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
                 "TPU_WORKER_HOSTNAMES"):
        env.pop(name, None)  # one process, never a multi-process start-up
    env.update(JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest",
               JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONUNBUFFERED="1")
    return env


ENV = _environment()


def log(message: str) -> None:
    print(f"[kill_resume] {message}", flush=True)


class Run:
    """One `arc-jax train` subprocess; its output (stderr included) read line by line in a thread."""

    def __init__(self, workdir: Path, data_dir: Path, name: str):
        self.name, self.workdir = name, workdir
        cmd = [sys.executable, "-u", "-m", "arc_jax.cli", "train", "--config", str(CONFIG), "--workdir", str(workdir),
               "--log-every", "1", *OVERRIDES, f"--config.data.dir={data_dir}"]
        self.start = time.monotonic()
        # Its own session: a kill reaches its whole process group (a preempted job's processes).
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                                     cwd=ROOT, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def steps_seen(self) -> list[int]:
        return [int(m.group(1)) for m in map(STEP_LINE.match, self.lines) if m]

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def next_line(self, until: float) -> str | None:
        """The next line, None at the end of the output; `until` (monotonic time) reached: TimeoutError."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None

    def wait_for_step(self, step: int | None = None) -> int | None:
        """Reads up to the first step line (or that of `step`); its step, None if the run ended first."""
        until = time.monotonic() + DEADLINE
        while True:
            try:
                line = self.next_line(until)
            except TimeoutError:
                self.kill(signal.SIGKILL)
                pytest.fail(f"{self.name}: no step line within {DEADLINE} s:\n{self.output}")
            if line is None:
                return None
            m = STEP_LINE.match(line)
            if m and (step is None or int(m.group(1)) >= step):
                return int(m.group(1))

    def kill(self, sig: int) -> None:
        if self.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)  # to the trainer, as a scheduler's polite request

    def finish(self) -> int:
        """Waits for the process to end and its output to be read; its exit status."""
        try:
            code = self.proc.wait(timeout=max(1.0, DEADLINE - self.elapsed()))
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"{self.name}: did not end within {DEADLINE} s:\n{self.output}")
        self._reader.join(timeout=30)
        return code


def finalized_steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def checkpoint_listing(workdir: Path) -> list[str]:
    folder = workdir / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def saved(workdir: Path, step: int):
    """(train state as numpy, data-pipeline state) of checkpoint `step`."""
    import orbax.checkpoint as ocp

    checkpoints = TrainCheckpoints(workdir)
    try:
        restored = checkpoints.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
    finally:
        checkpoints.close()
    return jax.device_get(restored.state), restored.data


def assert_same_checkpoints(workdir: Path, reference: Path) -> None:
    """Every checkpoint both workdirs hold, MAX_STEPS's included, is bit-identical."""
    common = sorted(set(finalized_steps(workdir)) & set(finalized_steps(reference)))
    assert MAX_STEPS in common, (finalized_steps(workdir), finalized_steps(reference))
    for step in common:
        state, data = saved(workdir, step)
        ref_state, ref_data = saved(reference, step)
        assert set(state) >= {"params", "opt"}, set(state)
        leaves, tree = jax.tree_util.tree_flatten_with_path(state)
        ref_leaves, ref_tree = jax.tree_util.tree_flatten_with_path(ref_state)
        assert tree == ref_tree, f"step {step}: the state trees differ"
        for (path, a), (_, b) in zip(leaves, ref_leaves):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape, jax.tree_util.keystr(path)
            assert np.array_equal(a, b), (f"step {step}: {jax.tree_util.keystr(path)} differs from the uninterrupted "
                                          f"run's (max |diff| {np.max(np.abs(a.astype(np.float64) - b)):.3g})")
        assert data == ref_data, f"step {step}: data-pipeline state {data} != {ref_data}"
    log(f"{workdir.name}: checkpoints {common} bit-identical to the reference")


def assert_resumed(run: Run, latest: int | None) -> None:
    """`run` started from `latest`, the last complete checkpoint its workdir held (None: from scratch)."""
    if latest is None:
        assert "resumed from" not in run.output, run.output
    elif run.steps_seen or "done:" in run.output:
        assert f"resumed from step {latest} in" in run.output, f"{run.name}: expected a resume from {latest}:\n" \
                                                                 f"{run.output}"
    if run.steps_seen:
        assert run.steps_seen[0] == (latest or 0) + 1, (latest, run.steps_seen)


def complete(workdir: Path, data_dir: Path, name: str) -> Run:
    """Restarts the run in `workdir`; it must resume from its latest complete checkpoint and finish."""
    latest = max(finalized_steps(workdir), default=None)
    run = Run(workdir, data_dir, name)
    code = run.finish()
    assert code == 0, f"{name}: exit {code}:\n{run.output}"
    assert_resumed(run, latest)
    assert f"done: {MAX_STEPS - (latest or 0)} steps" in run.output, run.output
    assert run.steps_seen == list(range((latest or 0) + 1, MAX_STEPS + 1)), run.steps_seen
    log(f"{name}: resumed from {latest}, finished in {run.elapsed():.1f} s")
    return run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The tiny corpus and tokenizer, built once so runs neither build nor race for them."""
    from arc_jax.demo.synthetic import build_tiny_data

    folder = tmp_path_factory.mktemp("tiny_data")
    build_tiny_data(folder, **load_config(CONFIG).data.corpus)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run, started in the background (it overlaps the first test's runs);
    calling the fixture's value waits for it and gives its workdir."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run = Run(workdir, data_dir, "reference")
    outcome = {}

    def result() -> Path:
        if "code" not in outcome:
            outcome["code"] = run.finish()
            log(f"reference: {run.elapsed():.1f} s")
        assert outcome["code"] == 0, f"reference run: exit {outcome['code']}:\n{run.output}"
        assert f"done: {MAX_STEPS} steps" in run.output, run.output
        return workdir

    yield result
    run.kill(signal.SIGKILL)
    run.finish()


def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path, data_dir, reference):
    rng = random.Random(SEED)
    workdir = tmp_path / "run"
    t0 = time.monotonic()

    # (a) During start-up: `delay` after the trainer made the workdir, i.e. while it builds the
    # pipeline, makes and writes the random decoder, initialises the state or compiles the step
    # (or at the first step line, should that come first).
    delay = rng.uniform(0.0, 6.0)
    run = Run(workdir, data_dir, f"kill 1 (start-up, {delay:.2f} s after the workdir appears)")
    until = time.monotonic() + DEADLINE
    while not workdir.exists() and run.proc.poll() is None and time.monotonic() < until:
        time.sleep(0.01)
    appeared = run.elapsed()
    until = time.monotonic() + delay
    while True:
        try:
            line = run.next_line(until)
        except TimeoutError:
            break
        if line is None:
            pytest.fail(f"{run.name}: ended before it was killed:\n{run.output}")
        if STEP_LINE.match(line):
            break
    run.kill(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL, run.output
    log(f"{run.name}: workdir at {appeared:.1f} s, SIGKILL at {run.elapsed():.1f} s, steps seen {run.steps_seen}, "
        f"workdir then held {sorted(p.name for p in workdir.glob('*'))}, checkpoints {checkpoint_listing(workdir)}")

    # (b) Right after the log line of a checkpoint step: its asynchronous save has just begun.
    latest = max(finalized_steps(workdir), default=None)
    target = max(rng.choice([2, 4, 6]), (latest or 0) + CHECKPOINT_EVERY)
    run = Run(workdir, data_dir, f"kill 2 (after step {target}'s line)")
    seen = run.wait_for_step(target)
    run.kill(signal.SIGKILL)
    code = run.finish()
    assert seen is not None and code == -signal.SIGKILL, f"{run.name}: exit {code}:\n{run.output}"
    assert_resumed(run, latest)
    log(f"{run.name}: SIGKILL after step line {seen} at {run.elapsed():.1f} s, steps seen {run.steps_seen}, "
        f"checkpoints left {checkpoint_listing(workdir)}")

    # (c) At a random moment of training: mid-step, mid-save or between them.
    delay = rng.uniform(0.0, 1.0)
    latest = max(finalized_steps(workdir), default=None)
    run = Run(workdir, data_dir, f"kill 3 ({delay:.2f} s after the first step line)")
    first = run.wait_for_step()
    assert first is not None, run.output
    time.sleep(delay)
    run.kill(signal.SIGKILL)
    code = run.finish()
    assert code in (-signal.SIGKILL, 0), f"{run.name}: exit {code}:\n{run.output}"
    assert_resumed(run, latest)
    log(f"{run.name}: {'SIGKILL' if code else 'ended before the kill'} at {run.elapsed():.1f} s, steps seen "
        f"{run.steps_seen}, checkpoints left {checkpoint_listing(workdir)}")

    if code != 0 or max(finalized_steps(workdir), default=0) < MAX_STEPS:
        complete(workdir, data_dir, "final restart")
    assert_same_checkpoints(workdir, reference())
    log(f"SIGKILL test: {time.monotonic() - t0:.1f} s")


def test_sigterm_saves_exits_and_resumes_bit_identical(tmp_path, data_dir, reference):
    rng = random.Random(SEED + 1)
    workdir = tmp_path / "run"
    t0 = time.monotonic()
    # Even, with its save in flight: the signal then mostly lands in the next step, an odd one, so
    # the preemption save is an off-schedule one (and waits for the scheduled save before it).
    target = rng.choice([2, 4, 6])
    run = Run(workdir, data_dir, f"SIGTERM after step {target}'s line")
    seen = run.wait_for_step(target)
    assert seen is not None, run.output
    run.kill(signal.SIGTERM)
    code = run.finish()
    assert code == 0, f"{run.name}: exit {code}:\n{run.output}"
    m = re.search(r"preempted \(SIGTERM\): saved step (\d+), exiting", run.output)
    assert m, run.output
    saved_step = int(m.group(1))
    # The step being run when the signal came: the logged one, or a later one (usually the next).
    assert seen <= saved_step < MAX_STEPS and run.steps_seen[-1] == saved_step, (seen, saved_step, run.steps_seen)
    assert max(finalized_steps(workdir)) == saved_step, checkpoint_listing(workdir)
    assert "done:" in run.output
    log(f"{run.name}: preempted at step {saved_step} after {run.elapsed():.1f} s, checkpoints "
        f"{checkpoint_listing(workdir)}")

    complete(workdir, data_dir, "restart after SIGTERM")
    assert_same_checkpoints(workdir, reference())
    log(f"SIGTERM test: {time.monotonic() - t0:.1f} s")
