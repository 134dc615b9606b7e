"""Several processes training one model: start-up, global batches from process-local data, and the
few host-side agreements a run needs (pipeline states for the checkpoint, preemption).

Every process runs the same program on its own devices. Process p owns rows of the global batch
(its data shards, see arc_jax/data/pipeline.py); `global_batch` assembles the global arrays from
those rows without moving data between hosts.
"""

from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               ) -> None:
    """jax.distributed.initialize when this is one process of several.

    Explicit arguments (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) win;
    otherwise JAX detects the cluster itself on multi-host TPU VMs and under SLURM (one task per
    GPU: JAX gives each SLURM task the GPU of its SLURM_LOCALID). A lone process initialises nothing."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()


def global_batch(local, shardings):
    """Global arrays from this process's rows (the leading axis, or the second one when the batch
    has a leading micro-batch axis: the sharding says which)."""
    if jax.process_count() == 1:
        return jax.device_put(local, shardings)
    return jax.tree.map(jax.make_array_from_process_local_data, shardings, local)


def process_allgather(tree):
    """The global value of every array of `tree` as numpy, on every process (a collective: every
    process must call it; one process: a plain device_get)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def sum_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each key's sum over every process (a collective: every process must call it, with the same
    keys); one process: `values` as floats."""
    keys = sorted(values)
    local = np.array([float(values[k]) for k in keys], np.float64)
    if jax.process_count() == 1:
        return dict(zip(keys, local.tolist()))
    from jax.experimental import multihost_utils

    # float32 on the wire (jax without x64): ample for counters that feed rates and fractions.
    gathered = np.asarray(multihost_utils.process_allgather(local.astype(np.float32)), np.float64)
    return dict(zip(keys, gathered.reshape(-1, len(keys)).sum(0).tolist()))


def gather_json(value) -> list:
    """`value` (anything JSON can hold) of every process, in process order."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[: int(n)]).decode()) for row, n in zip(rows, lengths.reshape(-1))]


class Preemption:
    """Whether the run should save and stop. One process: SIGTERM sets a flag. Several: JAX's
    coordination service catches the signal and all processes agree on the same step."""

    def __init__(self):
        self._flag = False
        self._previous = None
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, *_):
        self._flag = True

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self._flag
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(step)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
