"""`arc-jax bench train` runs the trainer's step and reports consistent figures."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from arc_jax.cli import main

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One `arc-jax bench train` run on tiny_cpu: 3 timed steps, then 3 traced ones (--profile);
    its folder, printed output and JSON."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert main(["bench", "train", "--config", str(CONFIG), "--steps", "3", "--warmup", "1", "--json", str(out),
                     "--profile", str(folder / "trace"), f"--config.data.dir={folder / 'data'}"]) == 0
    return folder, printed.getvalue(), json.loads(out.read_text())


def test_bench_train_prints_and_writes_step_time_throughput_fill_and_both_mfus(bench):
    folder, printed, r = bench
    assert "MFU" in printed and "tokens/s" in printed and "useful" in printed and "executed" in printed
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
    assert sorted(p.name for p in folder.iterdir()) == ["bench.json", "data", "trace"]  # no decoder written


def test_bench_train_profile_names_the_largest_ops_and_their_kinds(bench):
    folder, printed, r = bench
    p = r["profile"]
    assert list((folder / "trace").glob("**/*.xplane.pb"))  # the trace stays for TensorBoard / xprof
    assert "largest ops" in printed and p["top_ops"][0]["op"] in printed
    assert p["steps"] == 3 and p["devices"] == 1 and p["op_ms_per_step"] > 0
    times = [r["ms"] for r in p["top_ops"]]
    assert times == sorted(times, reverse=True) and sum(times) <= p["op_ms_per_step"] * (1 + 1e-9)
    assert abs(sum(k["share"] for k in p["by_kind"].values()) - 1) < 1e-9
    # The CPU trace's ops are XLA's, not the thread pool's bookkeeping.
    assert not any("ThreadpoolListener" in r["op"] or r["op"].startswith("end: ") for r in p["top_ops"])


class _Event:
    def __init__(self, name, ns, start=None, **stats):
        self.name, self.duration_ns, self.start_ns, self.stats = name, ns, start, list(stats.items())


class _Line:
    def __init__(self, name, events):  # events without a start follow each other
        self.name, self.events, t = name, events, 0
        for e in events:
            e.start_ns = t if e.start_ns is None else e.start_ns
            t = e.start_ns + e.duration_ns


class _Plane:
    def __init__(self, name, lines):
        self.name, self.lines = name, lines


class _Profile:
    def __init__(self, planes):
        self.planes = planes


def test_profile_summary_of_a_gpu_trace_counts_kernels_once_by_their_hlo_op():
    from arc_jax.tools.profile_summary import summarize_profile

    gpu = _Plane("/device:GPU:0", [
        _Line("Stream #13(Compute)", [
            _Event("sm90_xmma_gemm_bf16bf16_bf16f32", 6_000_000, hlo_op="custom-call.12"),
            _Event("sm90_xmma_gemm_bf16bf16_bf16f32", 6_000_000, hlo_op="custom-call.12"),
            _Event("cudnn_generated_fort_native_sdpa_sm90", 5_000_000, hlo_op="custom-call.7"),
            _Event("loop_multiply_fusion", 2_000_000, hlo_op="fusion.3"),
            _Event("loop_multiply_fusion", 1_000_000)]),  # no hlo_op: named by its kernel
        _Line("Stream #14(Memcpy)", [_Event("MemcpyD2D", 500_000, hlo_op="copy.1")]),
        _Line("XLA Modules", [_Event("jit_train_step", 20_500_000)]),  # the same time again, summarised
        _Line("Steps", [_Event("0", 20_500_000)])])
    host = _Plane("/host:CPU", [_Line("tf_XLAPjRtCpuClient/1", [_Event("ynn_fusion", 99_000_000)])])
    s = summarize_profile(_Profile([host, gpu]), steps=2)
    assert abs(s["op_ms_per_step"] - 10.25) < 1e-9  # 20.5 ms over 2 steps; host events and summary lines left out
    top = {r["op"]: r for r in s["top_ops"]}
    assert list(top) == ["custom-call.12", "custom-call.7", "fusion.3", "loop_multiply_fusion", "copy.1"]
    assert top["custom-call.12"]["ms"] == 6 and top["custom-call.12"]["calls_per_step"] == 1
    assert [top[op]["kind"] for op in top] == ["matmul", "attention", "fusion", "fusion", "copy"]
    assert {k: v["ms"] for k, v in s["by_kind"].items()} == {"matmul": 6, "attention": 2.5, "fusion": 1.5, "copy": 0.25}


def test_profile_summary_of_a_trace_without_ops_says_so():
    from arc_jax.tools.profile_summary import format_summary, summarize_profile

    s = summarize_profile(_Profile([_Plane("/host:CPU", [_Line("python", [_Event("PjitFunction(step)", 5)])])]), 1)
    assert s["op_ms_per_step"] == 0 and not s["top_ops"] and "no op events" in format_summary(s)


def test_profile_summary_counts_cpu_ops_on_any_thread():
    from arc_jax.tools.profile_summary import summarize_profile

    host = _Plane("/host:CPU", [
        _Line("python", [_Event("PjitFunction(step)", 9_000_000, start=0),  # no hlo_op: not an op
                         _Event("fusion.1", 2_000_000, start=1_000_000, hlo_op="fusion.1")]),  # run inline
        _Line("tf_XLAPjRtCpuClient/1", [_Event("ThunkExecutor::Execute", 5_000_000, start=0),
                                        _Event("dot.2", 3_000_000, start=0, hlo_op="dot.2")])])
    s = summarize_profile(_Profile([host]), steps=1)
    assert {r["op"]: r["ms"] for r in s["top_ops"]} == {"dot.2": 3, "fusion.1": 2}


def test_profile_summary_of_cpu_ops_ignores_planes_that_are_not_accelerators():
    # With libtpu loaded in the process (a deviceless TPU compile before, as in the test suite),
    # a CPU trace also holds an empty "/device:CUSTOM:Megascale Trace" plane: not a device.
    from arc_jax.tools.profile_summary import summarize_profile

    host = _Plane("/host:CPU", [_Line("tf_XLAEigen/1", [_Event("dot.2", 3_000_000, hlo_op="dot.2")])])
    s = summarize_profile(_Profile([_Plane("/device:CUSTOM:Megascale Trace", []), host]), steps=1)
    assert s["devices"] == 1 and {r["op"]: r["ms"] for r in s["top_ops"]} == {"dot.2": 3}


def test_profile_summary_prefers_a_devices_xla_ops_line():
    from arc_jax.tools.profile_summary import summarize_profile

    def tpu(i, fusion_ns):
        return _Plane(f"/device:TPU:{i}", [
            _Line("XLA Ops", [_Event("while.4", 4_000_000, start=0),  # around its body's two ops: not counted
                              _Event("fusion.1", fusion_ns, start=0),
                              _Event("all-gather.2", 1_000_000, start=3_000_000)]),
            _Line("XLA Modules", [_Event("jit_train_step", 4_000_000)]),
            _Line("TensorCore Sync Flags", [_Event("sync", 9_000_000)])])

    s = summarize_profile(_Profile([tpu(0, 3_000_000), tpu(1, 2_000_000)]), steps=1)
    assert s["devices"] == 2 and s["op_ms_per_step"] == 3.5  # (4 + 3 ms) over two devices
    assert s["by_kind"]["collective"]["ms"] == 1 and s["top_ops"][0]["calls_per_step"] == 1


def test_nominal_peak_by_device_kind():
    from arc_jax.tools.bench_train import nominal_bf16_peak

    assert nominal_bf16_peak("NVIDIA H200") == 989e12 and nominal_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert nominal_bf16_peak("TPU v5 lite") == 197e12 and nominal_bf16_peak("TPU v5") == 459e12
    assert nominal_bf16_peak("TPU v6 lite") == 918e12 and nominal_bf16_peak("TPU v4") == 275e12
    assert nominal_bf16_peak("NVIDIA H100 PCIe") is None and nominal_bf16_peak("cpu") is None


def test_bench_train_counts_what_the_splash_kernel_runs(tmp_path):
    """tiny_cpu's decoder rows of 168 slots (filled past slot 128) are padded to two of the kernel's
    128-slot blocks, whose diagonal alone is 2 x 128² pairs against the 168² the static count takes:
    the executed FLOPs reported are the static count's adjusted by the batches' blocks, here above it."""
    from arc_jax.config_loading import load_config
    from arc_jax.data.config import parse_data_config
    from arc_jax.model.config import BackboneConfig, EncoderConfig
    from arc_jax.train import flops

    out = tmp_path / "bench.json"
    overrides = [f"--config.data.dir={tmp_path / 'data'}", "--config.attention_impl=splash"]
    assert main(["bench", "train", "--config", str(CONFIG), "--steps", "2", "--warmup", "1", "--json", str(out),
                 *overrides]) == 0
    r = json.loads(out.read_text())
    config = load_config(CONFIG, overrides)
    static = flops.train_step_flops(EncoderConfig.from_dict(config.model.encoder.to_dict()),
                                    BackboneConfig.from_dict(config.model.decoders[0].backbone.to_dict()),
                                    parse_data_config(config.data).shape, attention_impl="splash")["total"]
    assert r["executed_flops_per_step"] > static
    assert r["useful_flops_per_step"] < r["executed_flops_per_step"]


def _gpu_launch_script(tmp_path, pytest_installed: bool, **env) -> tuple:
    """launch/gpu_bench.sh run with a stand-in Python that records its arguments (and, asked
    whether pytest imports, answers `pytest_installed`): (the process, the calls recorded)."""
    import os
    import subprocess

    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/bash\n[ "$1" = -c ] && exit {0 if pytest_installed else 1}\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["bash", str(root / "launch" / "gpu_bench.sh"), str(tmp_path / "out")], cwd=root,
                            env={**os.environ, "PYTHON": str(fake), **env}, capture_output=True, text=True)
    return result, calls.read_text().splitlines() if calls.exists() else []


TRAIN_BENCHES = ("bench_gpu_real_shapes", "bench_gpu_attention_rows", "bench_gpu_unrolled")


def _train_bench_call(out, name: str) -> str:
    return (f"-m arc_jax bench train --config configs/{name}.py --config.attention_impl=jax_nn --steps 5 "
            f"--json {out}/train_{name}.json --profile {out}/trace_{name}")


def test_the_gpu_launch_script_benches_the_three_training_configs(tmp_path):
    """Without pytest: the inference bench, then `bench train` on the packed, attention-rows and
    unrolled configs, each with its own JSON and trace."""
    result, lines = _gpu_launch_script(tmp_path, pytest_installed=False)
    assert result.returncode == 0, result.stderr
    assert lines[0] == "-" and lines[1].startswith("-m arc_jax bench inference ")
    assert lines[2:] == [_train_bench_call(tmp_path / "out", name) for name in TRAIN_BENCHES]


def test_the_gpu_launch_script_runs_the_parts_asked_for(tmp_path):
    result, lines = _gpu_launch_script(tmp_path, pytest_installed=True, PARTS="train")
    assert result.returncode == 0, result.stderr
    assert lines == ["-"] + [_train_bench_call(tmp_path / "out", name) for name in TRAIN_BENCHES]
    (tmp_path / "calls.txt").unlink()
    result, lines = _gpu_launch_script(tmp_path, pytest_installed=True, PARTS="tests inference")
    assert result.returncode == 0, result.stderr
    assert lines[0] == "-" and lines[1].startswith("-m pytest ") and lines[2].startswith("-m arc_jax bench inference ")
    assert len(lines) == 3
    (tmp_path / "calls.txt").unlink()
    result, lines = _gpu_launch_script(tmp_path, pytest_installed=True, PARTS="tests trian")
    assert result.returncode == 2 and lines == []
    assert result.stderr.strip() == "gpu_bench.sh: PARTS has 'trian': expected some of tests, inference, train"
