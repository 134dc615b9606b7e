"""The train steps compile for the CPU without YNNPACK's fusions (arc_jax/train/xla_cpu.py)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from arc_jax.train import xla_cpu

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


def _mlp(x, w):
    return jnp.tanh(x @ w).sum(0)


def _compiled_text(fn, *args, **jit_kwargs) -> str:
    return jax.jit(fn, **jit_kwargs).lower(*args).compile().as_text()


def _skip_without_ynnpack_fusions():
    x = jnp.ones((64, 64))
    if "__ynn_fusion" not in _compiled_text(_mlp, x, x):
        pytest.skip("this jaxlib makes no YNNPACK fusions here: nothing to turn off")


def test_the_option_removes_ynnpack_fusions_from_a_cpu_program():
    _skip_without_ynnpack_fusions()
    x = jnp.ones((64, 64))
    options = xla_cpu.train_step_options("cpu")
    assert options == {xla_cpu.YNN_FUSION_TYPE: ""}
    assert "__ynn_fusion" not in _compiled_text(_mlp, x, x, compiler_options=options)


def test_only_on_the_cpu_and_not_over_the_users_xla_flags(monkeypatch):
    assert xla_cpu.train_step_options("gpu") == {} and xla_cpu.train_step_options("tpu") == {}
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.YNN_FUSION_TYPE}=individual_dot")
    assert xla_cpu.train_step_options("cpu") == {}


def test_the_trainers_step_compiles_with_it(tmp_path):
    from arc_jax.config_loading import load_config
    from arc_jax.tools.plan import build, compile_step
    from arc_jax.train.run_config import parse_run_config

    _skip_without_ynnpack_fusions()
    config = load_config(TINY, [f"--config.data.dir={tmp_path}"])
    run = parse_run_config(config, device_count=1)
    built = build(run, jax.devices("cpu")[:1], quiet=True)
    compiled, exhausted = compile_step(built.program.step(0), built.args[0])
    assert exhausted is None and "dot" in compiled.as_text() and "__ynn_fusion" not in compiled.as_text()
