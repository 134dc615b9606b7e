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
# Every program, however small: the test workers and the processes tests start compile the same
# tiny eager ops and inits again and again, and a cache read is cheaper than any compile.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
# Several test workers may compile for TPU deviceless at once: no TPU to guard with libtpu's lockfile.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of compiling; run with ARC_JAX_SLOW_TESTS=1 (not in CI)")


# The longest test files (each 50-160 s on the 2-core CI machine, 2026-12-06), longest first. The
# workers take files in collection order (pyproject.toml: --dist loadfile --no-loadscope-reorder),
# so the longest start first and the short ones fill in at the end, instead of one long file
# running alone at the end while the other worker idles.
LONGEST_FILES = ("test_sharding.py", "test_train_options.py", "test_demo.py", "test_kill_resume.py", "test_plan.py",
                 "test_attention_rows.py", "test_windowed_attention.py", "test_save_failures.py",
                 "test_restore_other_mesh.py", "test_multiprocess_training.py", "test_decoder_lm.py",
                 "test_backbone_variants.py", "test_bench.py")


def pytest_collection_modifyitems(config, items):
    import pytest

    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    if os.environ.get("ARC_JAX_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set ARC_JAX_SLOW_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
