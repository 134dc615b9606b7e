"""glibc's malloc, set to keep the memory a CPU train step frees for the next step.

XLA:CPU allocates a run's temporaries afresh each time it runs a program. glibc serves an
allocation above its mmap threshold (128 KiB to 32 MiB, adjusted as it goes) with a mapping of its
own, and unmaps it when it is freed, so every step faults its temporaries' pages in anew, each
4 KiB page zeroed by the kernel: `arc-jax bench train --config configs/tiny_cpu_finetune.py`
took ~12,800 page faults a step and 3.4 s of system time in 100 steps. With `M_MMAP_MAX` = 0 (no
allocation gets a mapping of its own) and `M_TRIM_THRESHOLD` = -1 (the heap never shrinks), the
freed memory serves the next step: 1 fault a step once the heap has grown, and the step took 0.74x as long (medians
of interleaved runs on this project's 2-core machine; README, Benchmark).

The cost: the process keeps the memory of its largest step until it exits, which a training
process needs again at its next step anyway. Allocations larger than a thread's malloc arena
(64 MiB) are still mapped each time (the demo's ARC stages, ~115 MB a step, and bench_cpu_55m's
3.3 GB: no faster); only settings read at start-up reach those (GLIBC_TUNABLES, README).

Process-wide, made once, on Linux with glibc only; a process started with malloc settings of its
own (`MALLOC_*` variables, or glibc.malloc in GLIBC_TUNABLES) keeps them."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def _user_settings() -> bool:
    return any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (module docstring); True where it was set."""
    if not sys.platform.startswith("linux") or _user_settings():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
