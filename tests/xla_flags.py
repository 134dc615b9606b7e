"""XLA_FLAGS of the test session (conftest.py) and of the processes tests start.

Tests run a few steps of tiny models, so compiling is most of their time: LLVM without its
optimisation passes compiles in about 2/3 of the time (`arc-jax demo --smoke`: 65 -> 43 s), and
the programs are the same HLO. Benchmarks and the demo run with XLA's defaults."""

OPTIMIZATION = "--xla_backend_optimization_level=0"


def with_devices(n: int) -> str:
    """The session's flags with `n` fake CPU devices."""
    return f"{OPTIMIZATION} --xla_force_host_platform_device_count={n}"
