"""One train step on (data, fsdp, tensor) meshes of 8 fake CPU devices equals one device, and
FSDP / tensor sharding shrink the parameter bytes each device holds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arc_jax.sharding import make_mesh
from xla_flags import with_devices

TESTS = Path(__file__).resolve().parent


def _probe(tmp_path, config: str, *overrides: str, meshes: str | None = None) -> dict:
    env = {**os.environ, "XLA_FLAGS": with_devices(8), "JAX_PLATFORMS": "cpu"}
    if meshes:
        env["PROBE_MESHES"] = meshes
    out = subprocess.run([sys.executable, str(TESTS / "sharded_step_probe.py"), str(TESTS.parent / "configs" / config),
                          str(tmp_path), *overrides], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_steps_match(report: dict) -> None:
    assert report["devices"] == 8
    for shape, result in report["meshes"].items():
        assert abs(result["loss"] - report["reference_loss"]) < 1e-5, (shape, result)
        # Gradients (through Adam's first moments) equal to float32 rounding of the largest one.
        assert result["max_grad_diff"] < 1e-5 * report["reference_max_grad"], (shape, result)
        # Adam's first update is lr * g / (|g| + eps): its slope in g is at most lr / eps (at g = 0),
        # so a gradient rounding of d moves a parameter by at most lr * d / eps (lr <= 1e-3, eps 1e-8).
        # Where gradients are ~eps this magnifies d; the bound is what any summation order may give.
        assert result["max_param_diff"] <= 1e-3 * max(result["max_grad_diff"], 1e-12) / 1e-8, (shape, result)


def test_sharded_steps_with_attention_rows_match_one_device(tmp_path):
    """tiny_cpu_finetune's samples (three documents each) in 4 groups of two encoder and two decoder
    rows, each with attention rows for two samples, on data x fsdp x tensor (2, 2, 2): each device
    holds one group and gathers within its rows, its heads split over tensor."""
    shape = {"encoder_len": 312, "max_contexts_per_row": 3, "encoder_attention_rows": "[[6,104]]",
             "decoder_len": 160, "decoder_attention_rows": "[[2,160]]", "loss_slots": 8, "attention_groups": 4}
    report = _probe(tmp_path, "tiny_cpu_finetune.py", *(f"--config.data.shape.{k}={v}" for k, v in shape.items()),
                    meshes="[[2, 2, 2]]")
    assert set(report["meshes"]) == {"[2, 2, 2]"}
    _assert_steps_match(report)


def test_sharded_steps_match_one_device(tmp_path):
    report = _probe(tmp_path, "tiny_cpu.py")
    _assert_steps_match(report)
    meshes = report["meshes"]
    assert meshes["[8, 1, 1]"]["param_bytes_fraction"] == pytest.approx(1.0)   # pure data parallel: replicated
    assert meshes["[1, -1, 1]"]["param_bytes_fraction"] < 0.13                  # FSDP over 8
    assert meshes["[2, 2, 2]"]["param_bytes_fraction"] < 0.3                   # FSDP 2 x tensor 2


def test_mesh_shapes_are_checked():
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        make_mesh([-1, -1, 1])
    with pytest.raises(ValueError, match="needs 4 devices"):
        make_mesh([2, 2, 1])
