"""The train steps compile for the CPU without YNNPACK's fusions, and the host's cores become devices on
request (arc_jax/train/xla_cpu.py)."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.train import xla_cpu
from xla_flags import OPTIMIZATION, with_devices

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
    assert options[xla_cpu.YNN_FUSION_TYPE] == ""
    assert "__ynn_fusion" not in _compiled_text(_mlp, x, x, compiler_options=options)


def _softmax_sum(x):
    return jax.nn.softmax(x, axis=-1).sum()


def test_the_option_keeps_long_reductions_whole():
    """XLA:CPU splits a reduction over more than 32 elements into a reduce-window of 32-element pieces
    (its tree_reduction_rewriter); the train steps' options keep it one fused reduction, with the
    same result up to the rounding of the float sum."""
    x = jax.random.normal(jax.random.key(0), (8, 200))
    options = xla_cpu.train_step_options("cpu")
    assert "reduce-window" in _compiled_text(_softmax_sum, x)
    assert "reduce-window" not in _compiled_text(_softmax_sum, x, compiler_options=options)
    np.testing.assert_allclose(jax.jit(_softmax_sum, compiler_options=options)(x), 8.0, rtol=1e-6)


def test_only_on_the_cpu_and_not_over_the_users_xla_flags(monkeypatch):
    assert xla_cpu.train_step_options("gpu") == {} and xla_cpu.train_step_options("tpu") == {}
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.YNN_FUSION_TYPE}=individual_dot")
    assert xla_cpu.train_step_options("cpu") == {xla_cpu.DISABLED_PASSES: "tree_reduction_rewriter"}
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.DISABLED_PASSES}=some_pass --{xla_cpu.YNN_FUSION_TYPE}=")
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


# Each case in a fresh process: the count of CPU devices is fixed once jax starts its backends.
_SPLIT = """
import os, sys
import jax
import jax.numpy as jnp
from arc_jax import sharding
from arc_jax.train import xla_cpu
if "one core" in sys.argv:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
if "started" in sys.argv:
    jnp.ones(2).block_until_ready()
split = xla_cpu.split_host_cpu(2)
mesh = sharding.make_mesh([-1, 1, 1])
print(split, jax.device_count(), xla_cpu.one_run_at_a_time(mesh), xla_cpu.waited(jnp.sin, mesh) is not jnp.sin)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a process that may use two cores")
def test_split_host_cpu_makes_a_device_a_core_unless_the_count_is_chosen_or_fixed():
    """A fresh process gets two CPU devices; a count chosen already (XLA_FLAGS, JAX_NUM_CPU_DEVICES),
    started backends or a single core keep theirs. A mesh over several CPU devices runs its programs
    one at a time: `waited` wraps them there, and leaves them as they are on one device."""
    base = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    base["XLA_FLAGS"] = OPTIMIZATION
    cases = {  # name: (extra argv, environment changes, expected output)
        "fresh": ([], {}, "True 2 True True"),
        "XLA_FLAGS names a count": ([], {"XLA_FLAGS": with_devices(3)}, "False 3 True True"),
        "JAX_NUM_CPU_DEVICES": ([], {"JAX_NUM_CPU_DEVICES": "1"}, "False 1 False False"),
        "jax started": (["started"], {}, "False 1 False False"),
        "one core": (["one core"], {}, "False 1 False False"),
    }
    runs = {name: subprocess.Popen([sys.executable, "-c", _SPLIT, *argv], env={**base, **env}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name, (argv, env, _) in cases.items()}
    for name, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, (name, err[-2000:])
        assert out.strip().splitlines()[-1] == cases[name][2], (name, out)


def test_waited_waits_for_the_program_before_it_not_for_its_own(monkeypatch):
    """Over several CPU devices a call waits for the outputs of the program launched before it (by
    any wrapped function) and returns without waiting for its own: the host makes the next batch
    while a step runs, and two programs are never in flight at once. An output deleted since
    (donated to the next program) is not waited for."""
    monkeypatch.setattr(xla_cpu, "one_run_at_a_time", lambda mesh: True)
    monkeypatch.setattr(xla_cpu, "_in_flight", [])
    events = []

    class Output:
        def __init__(self, name):
            self.name = name

        def block_until_ready(self):
            events.append(("wait", self.name))
            return self

    def program(name):
        events.append(("launch", name))
        return {"state": Output(name), "metrics": [Output(name + "'s metrics")]}

    step, evaluate = xla_cpu.waited(program, mesh=None), xla_cpu.waited(program, mesh=None)
    step("step 1")
    step("step 2")
    evaluate("eval")
    assert events == [("launch", "step 1"),
                      ("wait", "step 1's metrics"), ("wait", "step 1"), ("launch", "step 2"),
                      ("wait", "step 2's metrics"), ("wait", "step 2"), ("launch", "eval")]

    donated = xla_cpu.waited(lambda: jnp.ones(3), mesh=None)()
    donated.delete()
    step("step 3")
    assert events[-1] == ("launch", "step 3")
