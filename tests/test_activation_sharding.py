"""On 8 fake CPU devices: the splash kernel runs per shard under a mesh (shard_map, the Pallas
interpreter) and matches the "xla" path; the train step's activation constraints keep the residual
stream split by rows, so its collectives move several times fewer bytes than without them."""

import json
import os
import subprocess
import sys
from pathlib import Path

from xla_flags import with_devices

TESTS = Path(__file__).resolve().parent


def test_splash_under_a_mesh_and_constrained_step():
    env = {**os.environ, "XLA_FLAGS": with_devices(8), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(TESTS / "activation_sharding_probe.py"),
                          str(TESTS.parent / "configs" / "tiny_cpu.py")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    for shape, result in report["splash"].items():  # rows over data, kv heads over tensor
        assert result["shard_map"], shape
        assert result["max_out_diff"] < 2e-5 and result["max_grad_diff"] < 5e-5, (shape, result)
    collectives = report["collective_bytes"]
    # Unconstrained, the residual stream follows the fsdp-sharded embedding table: the whole batch
    # split on its width, every matmul all-reducing a full-batch output (9x the bytes here).
    assert collectives["True"] < 0.25 * collectives["False"], collectives
