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
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class TrainCheckpoints:
    def __init__(self, workdir: str | Path, keep: int = 3, save_every: int | None = None):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every or 1,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints", options=options,
                                             item_names=("state", "data", "config"))

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, config: dict, force: bool = False) -> bool:
        """Start saving `step` (returns at once; `wait()` blocks until it is on disk)."""
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config)), force=force)

    def restore(self, abstract_state, step: int | None = None):
        """(state, data_state, config) of `step` (default: the latest)."""
        step = self.latest_step if step is None else step
        target, upgrade = abstract_state, None
        if _is_train_state(abstract_state) and _one_count_per_head(self.manager.item_metadata(step)["state"]):
            target, upgrade = _with_one_count_per_head(abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore()))
        state = restored.state if upgrade is None else upgrade(restored.state)
        return state, restored.data, restored.config

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


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
