"""Training checkpoints with Orbax: the train state, the input pipeline's state and the config.

    <workdir>/checkpoints/<step>/state   TrainState (params, optimiser moments, counters)
                                 /data    the batch iterator's state (JSON)
                                 /config  the run's config (JSON)

Saves are asynchronous (training continues while the arrays are written); the manager keeps the
last `keep` steps. Restoring takes the abstract state of the run being resumed, so shardings
(and a different mesh) come from the caller.

A train state saved before a head's parts (<Rec>, <Cont>, projector) had their own Adam counts
holds one count per head; restore reads it as it was saved and gives each part its head's count
(arc_jax.train.optimizer.from_one_count_per_head), so such runs resume.

Damage. A step is intact when Orbax committed it (it writes commit_success.txt into the step and
into each item last; an interrupted save leaves none) and every item restores: a copy interrupted
midway or a full disk leaves committed-looking folders with truncated files, so only a restore
tells. `newest_intact` walks back from the newest step to the newest intact one; the trainer
resumes there (`TrainCheckpoints.resume`, which moves the damaged newer steps to
<workdir>/damaged_checkpoints/ so that their step numbers can be saved again) and readers of a
workdir (`arc_jax.load_encoder`) read it, each naming in one warning line what it skipped and why.

A save that cannot be written (full disk, read-only folder) raises `SaveFailed` in one line: before
it starts when the folder is not writable or has less free space than the state needs, or from the
asynchronous write at the next save or wait. Its half-written folder is removed; the previous
checkpoints are untouched (Orbax removes the oldest only after a new one is committed).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import orbax.checkpoint as ocp

from arc_jax.errors import ArcJaxError, debugging
from arc_jax.train.errors import DamagedCheckpoint, SaveFailed, TrainingError

log = logging.getLogger("arc_jax.train")
COMMIT_MARKER = "commit_success.txt"  # Orbax writes it into a step, and into each item, once it is complete
ITEMS = ("config", "data", "state")  # restored in this order: the small JSON items first
DAMAGED = "damaged_checkpoints"  # <workdir>/damaged_checkpoints/<step>: steps a resume walked back over
_HEADROOM = 1 << 20  # bytes of slack a save is checked for beyond the last checkpoint's size
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)  # why a disk refuses a write
T = TypeVar("T")


class TrainCheckpoints:
    def __init__(self, workdir: str | Path, keep: int = 3, save_every: int | None = None):
        # cleanup_tmp_directories: a save killed midway leaves <step>.orbax-checkpoint-tmp*, removed here.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every or 1,
                                               enable_async_checkpointing=True, cleanup_tmp_directories=True)
        self.workdir = Path(workdir).resolve()
        self.directory = self.workdir / "checkpoints"
        drop_abandoned_future_noise()
        # Handlers named up front: Orbax warns about every item of a step it reads without them.
        with _absl_quiet():
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
                "state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                "config": ocp.JsonCheckpointHandler()})
        self._writing: int | None = None  # the step of the save in flight, if any
        self._reported = False  # a failed save was reported (Orbax raises its error again on close)
        if not debugging():  # a failing save's errors reach wait() or save() as one SaveFailed line
            logging.getLogger("absl").addFilter(self._not_a_failing_save)

    def _not_a_failing_save(self, record: logging.LogRecord) -> bool:
        """False for Orbax's own error logs (a traceback each, from several threads) while one of
        these saves is being written."""
        orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (self._writing is not None and orbax and record.levelno >= logging.ERROR)

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, config: dict, force: bool = False) -> bool:
        """Start saving `step` (returns at once; `wait()` blocks until it is on disk). SaveFailed
        (one line) when this save or the previous one cannot be written."""
        self.wait()
        if not force and not self.manager.should_save(step):
            return False
        self._check_room(step)
        self._writing = step
        try:
            return self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config)), force=force)
        except Exception as e:  # written at once (the folder, the JSON items): the disk refused
            raise self._failed(e) from None

    def restore(self, abstract_state, step: int | None = None):
        """(state, data_state, config) of `step` (default: the latest); DamagedCheckpoint naming
        the item that does not restore."""
        step = self.latest_step if step is None else step
        folder = self.directory / str(step)
        config = _restored_item(folder, "config", lambda: self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config)
        data = _restored_item(folder, "data", lambda: self.manager.restore(
            step, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data)
        return _restored_item(folder, "state", lambda: self._restore_state(abstract_state, step)), data, config

    def _restore_state(self, abstract_state, step: int):
        target, upgrade = abstract_state, None
        if _is_train_state(abstract_state) and _one_count_per_head(self.manager.item_metadata(step)["state"]):
            target, upgrade = _with_one_count_per_head(abstract_state)
        state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        return state if upgrade is None else upgrade(state)

    def resume(self, abstract_state):
        """(step, state, data_state) of the newest intact checkpoint, None when there is none to
        resume. Damaged newer steps are named in one warning line and moved to
        <workdir>/damaged_checkpoints/; with checkpoints but none intact, TrainingError."""
        if not step_folders(self.workdir):
            return None
        found, restored, skipped = newest_intact(self.workdir, lambda folder: self.restore(abstract_state,
                                                                                          int(folder.name)))
        chosen = _on_every_process(None if found is None else found.name)
        if len(set(chosen)) > 1:
            self.close()
            raise TrainingError(f"{self.directory}: the processes found different newest intact checkpoints "
                                f"({chosen}); check that every process sees the same files")
        if found is None:
            self.close()
            raise TrainingError(f"{self.directory}: no checkpoint restores, so the run cannot resume "
                                f"({'; '.join(skipped)}); move the folder away to start the run afresh")
        if skipped:
            self._move_damaged([self.directory / entry.split(" ", 1)[0] for entry in skipped])
            log.warning("%s: skipped damaged checkpoint(s) %s, moved to %s; resuming from step %s", self.directory,
                        "; ".join(skipped), self.workdir / DAMAGED, found.name)
        return (int(found.name), *restored[:2])

    def _move_damaged(self, folders: list[Path]) -> None:
        """Out of the manager's way (their steps are saved again), kept for a post-mortem."""
        if jax.process_index() == 0:
            for folder in folders:
                target = self.workdir / DAMAGED / folder.name
                n = 1
                while target.exists():
                    target, n = self.workdir / DAMAGED / f"{folder.name}.{n}", n + 1
                target.parent.mkdir(exist_ok=True)
                shutil.move(str(folder), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("arc_jax_move_damaged_checkpoints")
        with _absl_quiet():
            self.manager.reload()

    def _check_room(self, step: int) -> None:
        """SaveFailed before anything is written when the folder is not writable or has less free
        space than the newest committed checkpoint takes (the arrays are compressed, so their size in
        memory would overstate it; the first save is not checked for space). Every process checks
        and all stop if one cannot write: a save is collective."""
        why = None
        probe = self.directory / f".write_probe_{step}_{jax.process_index()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
            free = shutil.disk_usage(self.directory).free
            last = next((f for f in step_folders(self.workdir) if uncommitted(f) is None), None)
            need = None if last is None else sum(f.stat().st_size for f in last.rglob("*") if f.is_file())
            if need is not None and free < need + _HEADROOM:
                why = (f"{self.directory} has {free / 1e6:.1f} MB free and the last checkpoint took "
                       f"{need / 1e6:.1f} MB")
        except OSError as e:
            why = f"{self.directory}: {e.strerror or e}"
        refused = [w for w in _on_every_process(why) if w is not None]
        if refused:
            raise SaveFailed(self._failure(step, refused[0]))

    def _failed(self, e: Exception) -> SaveFailed:
        """The SaveFailed of the save in flight, its half-written folder removed."""
        step, self._writing, self._reported = self._writing, None, True
        if jax.process_index() == 0:
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
        # Tensorstore's message names the chunk first and the reason last: say the reason.
        text = str(e)
        why = next((f"{self.directory}: {os.strerror(code)}" for code in _DISK_ERRNOS if os.strerror(code) in text),
                   _one_line(e))
        return SaveFailed(self._failure(step, why))

    def _failure(self, step: int | None, why: str) -> str:
        committed = [int(f.name) for f in step_folders(self.workdir) if uncommitted(f) is None and int(f.name) != step]
        kept = f"the last checkpoint, step {committed[0]}, is intact" if committed else "no earlier checkpoint"
        return (f"cannot save checkpoint {step}: {why}; {kept}: free space (or make {self.directory} writable) and "
                "run the same command again to resume")

    def wait(self) -> None:
        """Blocks until the save in flight is on disk; SaveFailed if it could not be written."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            if self._reported:  # Orbax raises a failed save's error again: reported once is enough
                return
            raise self._failed(e) from None
        self._writing = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            logging.getLogger("absl").removeFilter(self._not_a_failing_save)
            try:
                self.manager.close()
            except Exception:
                if not self._reported:
                    raise


def step_folders(workdir: str | Path) -> list[Path]:
    """The step folders of <workdir>/checkpoints, newest first."""
    folder = Path(workdir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: -int(p.name))


def uncommitted(step: Path) -> str | None:
    """Why Orbax never finished the save of `step` (a step folder); None when it did."""
    if not (step / COMMIT_MARKER).is_file():
        return f"no {COMMIT_MARKER}: an interrupted save or copy"
    missing = [item for item in ITEMS if not (step / item / COMMIT_MARKER).is_file()]
    return f"{', '.join(missing)}: not committed (an interrupted save or copy)" if missing else None


def newest_intact(workdir: str | Path, restore: Callable[[Path], T]) -> tuple[Path | None, T | None, list[str]]:
    """(step folder, restore(step folder), skipped) of the newest committed step of `workdir` that
    `restore` reads without an exception; `skipped`: "<step> (<why>)" of each newer one. (None,
    None, skipped) when no step is intact."""
    drop_abandoned_future_noise()
    skipped = []
    for folder in step_folders(workdir):
        why = uncommitted(folder)
        if why is None:
            try:
                with _absl_quiet():  # Orbax's warnings about a damaged step; the reason below says it once
                    return folder, restore(folder), skipped
            except Exception as e:  # noqa: BLE001 (Orbax raises many types for damaged files)
                why = str(e) if isinstance(e, ArcJaxError) else _one_line(e)
        skipped.append(f"{folder.name} ({why})")
    return None, None, skipped


def read_checkpoint(path: str | os.PathLike, read: Callable[[Path], T]) -> T:
    """read(path); for a trainer workdir (a checkpoints/ folder, no arc_jax.json), read(its newest
    intact step folder), for readers that do not resume it (arc_jax.load_encoder, eval, generate,
    export): a step is intact when its JSON items parse and `read` succeeds. Skipped steps are named
    in one warning line; with none intact, DamagedCheckpoint."""
    workdir = Path(path)
    if (workdir / "arc_jax.json").is_file() or not (workdir / "checkpoints").is_dir():
        return read(workdir)

    def checked(folder: Path) -> T:
        for item in ("config", "data"):
            _restored_item(folder, item, lambda path=folder / item / "metadata": json.loads(path.read_text()))
        return read(folder)

    found, result, skipped = newest_intact(workdir, checked)
    if found is None:
        raise DamagedCheckpoint(f"{Path(workdir) / 'checkpoints'}: no checkpoint reads ({'; '.join(skipped)})")
    if skipped:
        log.warning("%s: skipped damaged checkpoint(s) %s; reading step %s", Path(workdir) / "checkpoints",
                    "; ".join(skipped), found.name)
    return result


def _restored_item(folder: Path, item: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except Exception as e:  # noqa: BLE001 (Orbax raises many types for damaged files)
        raise DamagedCheckpoint(f"{folder / item}: cannot restore ({_one_line(e)})") from None


def _one_line(e: BaseException, limit: int = 240) -> str:
    text = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _on_every_process(value) -> list:
    """`value` (JSON) of every process, in process order; [value] in a lone process."""
    if jax.process_count() == 1:
        return [value]
    from arc_jax.train import multihost

    return multihost.gather_json(value)


@contextlib.contextmanager
def _absl_quiet():
    """Orbax logs warnings and errors for each damaged file it meets while it lists or reads steps;
    the walk back reports each damaged step itself, in one line."""
    logger = logging.getLogger("absl")
    level = logger.level
    if not debugging():
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def drop_abandoned_future_noise() -> None:
    """Orbax reads and writes arrays through futures gathered on an event loop that it closes as soon
    as one of them fails. The others then finish into the closed loop, and each prints a traceback
    ("RuntimeError: Event loop is closed", through sys.unraisablehook) or is logged when collected
    ("exception was never retrieved", asyncio's logger), after the failure itself was caught and
    reported in one line. Those are dropped, anything else passes; once per process, not under
    --debug."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_future_noise", False) or debugging():
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_abandoned_future_noise = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_not_an_abandoned_orbax_future)


def _not_an_abandoned_orbax_future(record: logging.LogRecord) -> bool:
    e = record.exc_info[1] if record.exc_info else None
    frames = traceback.extract_tb(e.__traceback__) if e is not None else []
    return not ("never retrieved" in record.getMessage() and any(f"{os.sep}orbax{os.sep}" in f.filename
                                                                  for f in frames))


def abstract_like(state):
    """The shapes, dtypes and shardings of `state`, as restore wants them."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def _is_train_state(state) -> bool:
    from arc_jax.train.step import TrainState

    return isinstance(state, TrainState)


def _one_count_per_head(saved) -> bool:
    """Whether a saved train state (`saved`: Orbax's metadata of the state item) holds one Adam
    count per head: the layout before a head's parts had their own."""
    from arc_jax.train import optimizer

    tree = getattr(saved, "tree", saved)
    if not isinstance(tree, dict):
        return False
    opt = tree.get("opt")
    adam = opt.get("adam") if isinstance(opt, dict) else None
    return isinstance(adam, dict) and optimizer.saved_with_one_count_per_head(adam)


def _with_one_count_per_head(abstract_state):
    """(the abstract state in the old layout, the function from a state restored in it to this
    layout: jitted, so each part's count is its own buffer, placed as `abstract_state` says)."""
    from arc_jax.train import optimizer

    adam = abstract_state.opt.adam
    target = abstract_state._replace(opt=abstract_state.opt._replace(adam=optimizer.one_count_per_head(adam)))
    placed = all(getattr(a, "sharding", None) is not None for a in jax.tree.leaves(adam))
    convert = jax.jit(optimizer.from_one_count_per_head,
                      out_shardings=jax.tree.map(lambda a: a.sharding, adam) if placed else None)
    return target, lambda state: state._replace(opt=state.opt._replace(adam=convert(state.opt.adam)))
