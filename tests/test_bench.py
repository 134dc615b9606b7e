"""`arc-jax bench train` runs the trainer's step and reports consistent figures."""

import json
from pathlib import Path

from arc_jax.cli import main

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


def test_bench_train_prints_and_writes_step_time_throughput_fill_and_both_mfus(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--config", str(CONFIG), "--steps", "3", "--warmup", "1", "--json", str(out),
                 f"--config.data.dir={tmp_path / 'data'}"]) == 0
    printed = capsys.readouterr().out
    assert "MFU" in printed and "tokens/s" in printed and "useful" in printed and "executed" in printed
    r = json.loads(out.read_text())
    assert r["steps"] == 3 and r["step_seconds"] > 0
    assert 0 < r["loss_tokens_per_second"] <= r["text_tokens_per_second"] < r["decoder_tokens_per_second"]
    assert 0 < r["encoder_fill"] <= 1 and 0 < r["decoder_fill"] <= 1
    # Useful FLOPs (real tokens, allowed attention pairs) are below the executed ones (static shape).
    assert 0 < r["useful_flops_per_step"] < r["executed_flops_per_step"]
    assert 0 < r["mfu"] < r["executed_mfu"] <= 1.0
    # The figures agree with each other.
    assert abs(r["useful_fraction"] - r["useful_flops_per_step"] / r["executed_flops_per_step"]) < 1e-9
    assert abs(r["achieved_flops_per_second"] - r["useful_flops_per_step"] / r["step_seconds"]) < (
        1e-6 * r["achieved_flops_per_second"])
    assert abs(r["executed_flops_per_second"] - r["executed_flops_per_step"] / r["step_seconds"]) < (
        1e-6 * r["executed_flops_per_second"])
    assert abs(r["mfu"] - r["achieved_flops_per_second"] / r["peak_flops_per_second"]) < 1e-9
    assert abs(r["executed_mfu"] - r["executed_flops_per_second"] / r["peak_flops_per_second"]) < 1e-9
    assert r["encoder_parameters"] > 0 and r["decoder_parameters"] > 0
    assert not list(tmp_path.glob("decoder_*"))  # nothing but the data was written
