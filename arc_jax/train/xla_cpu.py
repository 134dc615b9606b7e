"""XLA:CPU compile options of the training steps (the trainer's and the demo decoder LM's); a step for
the CPU also sets how the host allocates its memory (host_allocator.py).

On the CPU, jaxlib 0.10's XLA hands dots, with the elementwise ops and reductions it fuses into them,
to YNNPACK by default. Without that (`xla_cpu_experimental_ynn_fusion_type` empty: XLA's own dot
thunks, on Eigen, and its own fused loops)
`arc-jax bench train --config configs/bench_cpu_55m.py` steps 0.90x as long on this project's 2-core
AMD EPYC machine (medians of interleaved runs; README, Benchmark). Other ops are unchanged; results
differ from YNNPACK's only by the rounding of float sums.

XLA:CPU also rewrites every reduction over more than 32 elements into a reduce-window of 32-element
pieces and a reduction of those (its tree_reduction_rewriter pass, for the rounding of long float
sums). Its reduce-window kernels are slow: in the demo's fine-tuning step, 67 of them (softmax
maxima and sums, norms, the loss) took 7% of the op time. Without the pass (`xla_disable_hlo_passes`)
the reductions fuse into their neighbours: the demo's steps on its two CPU devices take 0.92x (ARC
pretraining), 0.94x (fine-tuning) and 0.95x (decoder LM) as long, bench_cpu_55m's 1.01x (quartiles
0.94-1.06: no change); A/B in one process, the same program compiled both ways (README, Benchmark).
Sums of float32 in another order: losses equal to ~1e-7.

Only for programs compiled for CPU devices; the options go to the step's own compile, not to
XLA_FLAGS, so a jaxlib that no longer knows them compiles without them (checked once, with a
warning) instead of aborting the process. An option named in XLA_FLAGS is yours: it is left out.

`split_host_cpu` makes the host's cores separate jax devices, for steps whose matmuls are too small
to share well between threads (the demo's models): each device runs its share of the batch's rows
on its own, and the gradients are summed across them. Programs over several CPU devices must then
run one at a time (`one_run_at_a_time`; `waited` wraps such a program: it waits for the program
launched before it, not for its own outputs, so the host makes the next batch while a step runs).
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import numpy as np

from arc_jax.train import host_allocator

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
HOST_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"
DISABLED_PASSES = "xla_disable_hlo_passes"
_OPTIONS = ((YNN_FUSION_TYPE, ""), (DISABLED_PASSES, "tree_reduction_rewriter"))


@functools.cache
def _accepted() -> bool:
    """Whether this jaxlib's CPU compiler takes the options (a tiny program compiled with them)."""
    try:
        with jax.default_device(jax.devices("cpu")[0]):
            jax.jit(lambda x: x + 1, compiler_options=dict(_OPTIONS)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError as e:
        warnings.warn(f"this jaxlib's XLA:CPU does not take {dict(_OPTIONS)}; train steps compile without it ({e})",
                      stacklevel=3)
        return False
    return True


def train_step_options(platform: str) -> dict[str, str]:
    """The `compiler_options` of a train step compiled for devices of `platform` ("cpu", "gpu",
    "tpu"): the options above on the CPU but those XLA_FLAGS names, none elsewhere. A step for
    the CPU also has glibc's malloc keep the memory it frees (host_allocator.keep_freed_memory)."""
    if platform != "cpu":
        return {}
    host_allocator.keep_freed_memory()
    if not _accepted():
        return {}
    return {name: value for name, value in _OPTIONS if name not in os.environ.get("XLA_FLAGS", "")}


def split_host_cpu(devices: int) -> bool:
    """Have jax make `devices` CPU devices of this host instead of one (jax_num_cpu_devices), one a
    core. Nothing changes, and False is returned, when the count was chosen already
    (JAX_NUM_CPU_DEVICES, jax.config's jax_num_cpu_devices, or --xla_force_host_platform_device_count
    in XLA_FLAGS), when the process may use fewer cores than that, or once jax has started its
    backends (the count is fixed from then on)."""
    if devices < 2 or jax.config.jax_num_cpu_devices != -1 or HOST_DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", ""):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < devices:
        return False
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # the backends exist
        return False
    return True


def one_run_at_a_time(mesh) -> bool:
    """Whether the caller must wait for each program over `mesh` (a jax Mesh) before launching the
    next: when it spans several CPU devices. XLA:CPU runs every CPU device's part of a program on
    one pool of threads, and a part waiting in a collective for its peers holds its thread; with a
    second program launched, every thread can end up waiting for a part that no thread is left to
    run, and XLA aborts the process after 40 s. Measured: the demo's decoder LM on 2 CPU devices of
    this project's 2-core hosts stopped so within its first 100 steps, twice; waiting on each step,
    300 steps ran."""
    devices = mesh.devices.flat
    return mesh.size > 1 and devices[0].platform == "cpu"


# The outputs of the last program `waited` launched (its leaves), until the next one launches.
_in_flight: list = []


def waited(program, mesh):
    """`program` (a jitted function over `mesh`) as it is, or, where programs over the mesh must run
    one at a time (`one_run_at_a_time`), a function that first waits for the outputs of the program
    launched before it (by any function `waited` made), then launches its own and returns at once.
    The host's work between two calls (the next batch: packing, FLOP counts, transfer) then runs
    while the program does: the demo's ARC steps on two CPU devices took 0.96x as long as when each
    call waited for its own outputs (A/B in one process, the trainer's batches, 16 rounds a stage).
    Programs launched without it must have no collectives."""
    if not one_run_at_a_time(mesh):
        return program

    @functools.wraps(program)
    def call(*args, **kwargs):
        # A leaf donated since is deleted: the program it went to has waited for it.
        jax.block_until_ready([x for x in _in_flight if not (isinstance(x, jax.Array) and x.is_deleted())])
        outputs = program(*args, **kwargs)
        _in_flight[:] = jax.tree.leaves(outputs)
        return outputs

    return call
