"""Training checkpoints with Orbax: the train state, the input pipeline's state and the config.

    <workdir>/checkpoints/<step>/state   TrainState (params, optimiser moments, counters)
                                 /data    the batch iterator's state (JSON)
                                 /config  the run's config (JSON)

Saves are asynchronous (training continues while the arrays are written); the manager keeps the
last `keep` steps. Restoring takes the abstract state of the run being resumed, so shardings
(and a different mesh) come from the caller.
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
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore()))
        return restored.state, restored.data, restored.config

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(state):
    """The shapes, dtypes and shardings of `state`, as restore wants them."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
