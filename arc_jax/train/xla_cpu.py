"""XLA:CPU compile options of the training steps (the trainer's and the demo decoder LM's); a step for
the CPU also sets how the host allocates its memory (host_allocator.py).

On the CPU, jaxlib 0.10's XLA hands dots, with the elementwise ops and reductions it fuses into them,
to YNNPACK by default. Without that (`xla_cpu_experimental_ynn_fusion_type` empty: XLA's own dot
thunks, on Eigen, and its own fused loops)
`arc-jax bench train --config configs/bench_cpu_55m.py` steps 0.90x as long on this project's 2-core
AMD EPYC machine (medians of interleaved runs; README, Benchmark). Other ops are unchanged; results
differ from YNNPACK's only by the rounding of float sums.

Only for programs compiled for CPU devices; the option goes to the step's own compile, not to
XLA_FLAGS, so a jaxlib that no longer knows it compiles without it (checked once, with a warning)
instead of aborting the process. Naming the option in XLA_FLAGS yourself keeps your choice.
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import numpy as np

from arc_jax.train import host_allocator

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
_OPTIONS = ((YNN_FUSION_TYPE, ""),)


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
    "tpu"): the options above on the CPU, none elsewhere or when XLA_FLAGS names them. A step for
    the CPU also has glibc's malloc keep the memory it frees (host_allocator.keep_freed_memory)."""
    if platform != "cpu":
        return {}
    host_allocator.keep_freed_memory()
    if any(name in os.environ.get("XLA_FLAGS", "") for name, _ in _OPTIONS):
        return {}
    return dict(_OPTIONS) if _accepted() else {}
