"""CPU-only test session: float32 matmuls at full precision, LLVM without its optimisation passes
(tests/xla_flags.py) and a persistent compilation cache."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
from xla_flags import OPTIMIZATION  # noqa: E402  (pytest puts tests/ on sys.path for this conftest)

if OPTIMIZATION.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {OPTIMIZATION}".strip()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# One CPU device a test worker unless XLA_FLAGS asks for more: the demo's in-process runs then leave
# it so (arc_jax.train.xla_cpu.split_host_cpu acts only where no count was chosen).
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    jax.config.update("jax_num_cpu_devices", 1)
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parent.parent / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Several test workers may compile for TPU deviceless at once: no TPU to guard with libtpu's lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of compiling; run with ARC_JAX_SLOW_TESTS=1 (not in CI)")


def pytest_collection_modifyitems(config, items):
    import pytest

    if os.environ.get("ARC_JAX_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set ARC_JAX_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
