"""glibc's malloc keeps the memory a CPU train step frees (arc_jax/train/host_allocator.py): a large
block allocated again after it was freed is served without faulting its pages in anew."""

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, resource, sys
from arc_jax.train import xla_cpu

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_size_t,), (ctypes.c_void_p,)
SIZE = 200 << 20  # as XLA:CPU allocates: malloc, no huge-page advice (NumPy gives its large arrays that)

def block():
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    libc.free(p)

def faults_of_a_second_block():
    block()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

before = faults_of_a_second_block()
options = xla_cpu.train_step_options(sys.argv[1])  # what the trainer calls before compiling its step
faults_of_a_second_block()  # the heap grows to hold the block once
print(json.dumps({"before": before, "after": faults_of_a_second_block(), "options": options}))
"""


def _probe(platform: str, **env) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"} | env
    out = subprocess.run([sys.executable, "-c", PROBE, platform], env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def glibc():
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") if sys.platform.startswith("linux") else None
    except (ValueError, OSError):
        version = None
    if version is None:
        pytest.skip("glibc's malloc only")


def _measurable(report: dict) -> dict:
    if report["before"] < 10_000:
        pytest.skip(f"this kernel maps the block in large pages ({report['before']} faults): nothing to measure")
    return report


def test_a_cpu_train_step_keeps_freed_memory_for_the_next(glibc):
    report = _measurable(_probe("cpu"))
    assert report["after"] < report["before"] / 50, report  # 51,200 pages of 4 KiB before


def test_not_for_other_platforms_nor_over_the_users_malloc_settings(glibc):
    for report in (_probe("gpu"), _probe("cpu", MALLOC_ARENA_MAX="4")):
        report = _measurable(report)
        assert report["after"] > report["before"] / 2, report
