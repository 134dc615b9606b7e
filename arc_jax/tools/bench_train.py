"""`arc-jax bench train`: step time, tokens/s, row fill and MFU of a config's train step, rerunnable anywhere.

The step is the trainer's own (same jit, shardings, donation), run on batches drawn beforehand
from the config's pipeline, so the figure is the device step alone: compile and warm-up steps are
excluded, then `steps` steps are timed to the last one's completion.

FLOPs are counted twice (arc_jax/train/flops.py, the convention of `arc-jax bench inference`):
"useful" on what the batches really hold (real tokens, attention over the (query, key) pairs the
masks allow, the output head on the loss tokens), counted on the host from each batch's arrays;
"executed" on the static packed shape (padding and dense masked attention included), what the
hardware runs, less the blocks the splash kernel skips on each batch. MFU ("mfu") is useful FLOPs
/ step time / peak, "executed_mfu" the same on executed FLOPs; the peak is the measured rate of a large jitted matmul in the config's compute
dtype on this backend, times the device count. Where the device's nominal dense bf16 peak is known
(the chips of arc_jax/tools/topology.py: NVIDIA H100 / H200 SXM, TPU v4 / v5e / v5p / v6e) and the
step computes in bfloat16, "nominal_mfu" is useful FLOPs over that peak, the figure MaxText and
others quote. Throughput counts non-padding decoder text tokens and loss tokens per second; the
fills are real slots over slots of the encoder and decoder rows. `profile_dir` traces
`profile_steps` more steps after the timed ones (jax.profiler, for TensorBoard or xprof) and adds
"profile", the largest ops' device time a step (arc_jax/tools/profile_summary.py; with several
processes each traces into profile_dir/process_N and reports its own devices). Random decoders
stay in memory (nothing is written but a temporary workdir).
"""

from __future__ import annotations

import collections
import itertools
import tempfile
import time

import jax
import ml_collections

from arc_jax.tools import profile_summary
from arc_jax.train import flops, multihost

# jax's device_kind -> the chip of arc_jax/tools/topology.py whose datasheet bf16 peak applies, most
# specific name first (None: a variant with another peak, e.g. the H100 PCIe's 756 TFLOP/s).
_DEVICE_KINDS = (("H100 PCIe", None), ("H100", "h100"), ("H200", "h200"), ("TPU v5 lite", "v5e"),
                 ("TPU v5e", "v5e"), ("TPU v5", "v5p"), ("TPU v6", "v6e"), ("TPU v4", "v4"))


def nominal_bf16_peak(device_kind: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a device of this kind, or None when not known."""
    from arc_jax.tools.topology import CHIPS

    for name, chip in _DEVICE_KINDS:
        if name.lower() in device_kind.lower():
            return CHIPS[chip].peak_flops if chip else None
    return None


def bench_train(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2, profile_dir: str | None = None,
                profile_steps: int = 3) -> dict:
    from arc_jax.train.trainer import Trainer, decoder_at, executed as executed_flops, throughput

    with tempfile.TemporaryDirectory(prefix="arc_jax_bench_") as workdir:
        trainer = Trainer(config, workdir, keep_random_decoders=False)
        run = trainer.run
        batches = []
        for i in range(min(steps + warmup, 8)):  # a few distinct batches, cycled
            d = decoder_at(run.decoder_schedule, run.seed, i + 1, len(trainer.decoders), run.decoder_weights)
            batch, work = trainer._next_batch(d)
            batches.append((d, batch, work))
        cycle = itertools.cycle(batches)
        state = trainer.state

        def run_steps(n):
            nonlocal state
            total, static = collections.Counter(), 0.0
            metrics = None
            for _ in range(n):
                d, batch, work = next(cycle)
                state, metrics = trainer.steps[d](state, trainer.decoders[d].params, batch)
                total.update(work)  # Counter.update adds
                static += trainer.flops_per_step[d]
            jax.block_until_ready((state, metrics))
            return total, static, metrics

        peak_before = flops.measure_matmul_peak(run.compute_dtype)
        t0 = time.perf_counter()
        run_steps(warmup)
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        work, static, metrics = run_steps(steps)
        seconds = time.perf_counter() - t0
        # The best of two measurements around the steps: a busy machine lowers the peak, not the MFU.
        peak_one = max(peak_before, flops.measure_matmul_peak(run.compute_dtype))
        profile = None
        if profile_dir:
            if jax.process_count() > 1:  # each process traces its own devices, into a folder of its own
                profile_dir = f"{profile_dir}/process_{jax.process_index()}"
            with jax.profiler.trace(profile_dir):
                run_steps(profile_steps)
            profile = profile_summary.summarize(profile_dir, profile_steps)
        trainer.checkpoints.close()

    peak = peak_one * jax.device_count()
    work = multihost.sum_over_processes(work)  # each process counted its own rows
    executed = executed_flops(work, static)  # less what the splash kernel skipped
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    n_frozen = sum(x.size for dec in trainer.decoders for x in jax.tree.leaves(dec.params))
    result = {
        "backend": jax.default_backend(), "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "processes": jax.process_count(), "compute_dtype": run.compute_dtype,
        "encoder_parameters": n_params, "decoder_parameters": n_frozen,
        "steps": steps, "step_seconds": seconds / steps, "warmup_and_compile_seconds": compile_seconds,
        "useful_flops_per_step": work["useful_flops"] / steps, "executed_flops_per_step": executed / steps,
        "useful_fraction": work["useful_flops"] / executed,
        "achieved_flops_per_second": work["useful_flops"] / seconds,
        "executed_flops_per_second": executed / seconds, "peak_flops_per_second": peak,
        **throughput(work, executed, steps, seconds, peak), "loss": float(metrics["loss"]),
    }
    nominal = nominal_bf16_peak(result["device_kind"]) if run.compute_dtype == "bfloat16" else None
    if nominal:
        result["nominal_peak_flops_per_second"] = nominal * jax.device_count()
        result["nominal_mfu"] = result["achieved_flops_per_second"] / result["nominal_peak_flops_per_second"]
    if profile:
        result["profile"] = profile
    return result


def format_result(r: dict) -> str:
    return "\n".join([
        f"backend      {r['backend']} x{r['devices']} ({r['device_kind']}), {r['compute_dtype']} compute",
        f"model        encoder {r['encoder_parameters'] / 1e6:,.1f}M trainable, decoder(s) "
        f"{r['decoder_parameters'] / 1e6:,.1f}M frozen",
        f"step time    {r['step_seconds'] * 1e3:,.1f} ms  ({r['steps']} steps; warm-up + compile "
        f"{r['warmup_and_compile_seconds']:.1f} s)",
        f"throughput   {r['decoder_tokens_per_second']:,.0f} decoder tokens/s (real slots), "
        f"{r['text_tokens_per_second']:,.0f} text tokens/s, {r['loss_tokens_per_second']:,.0f} loss tokens/s",
        f"row fill     encoder {r['encoder_fill']:.1%}, decoder {r['decoder_fill']:.1%} (real slots / slots)",
        f"FLOPs/step   useful {r['useful_flops_per_step'] / 1e12:,.4f} TFLOP, executed "
        f"{r['executed_flops_per_step'] / 1e12:,.4f} TFLOP (useful {r['useful_fraction']:.1%} of executed)",
        f"achieved     {r['achieved_flops_per_second'] / 1e12:,.3f} TFLOP/s useful, "
        f"{r['executed_flops_per_second'] / 1e12:,.3f} TFLOP/s executed",
        f"peak         {r['peak_flops_per_second'] / 1e12:,.3f} TFLOP/s (measured matmul, all devices)",
        f"MFU          {r['mfu']:.1%} on useful FLOPs (executed {r['executed_mfu']:.1%})",
        *([f"nominal MFU  {r['nominal_mfu']:.1%} of the datasheet's {r['nominal_peak_flops_per_second'] / 1e12:,.0f} "
           f"dense bf16 TFLOP/s (useful FLOPs)"] if "nominal_mfu" in r else []),
        *([profile_summary.format_summary(r["profile"])] if "profile" in r else []),
    ])


def main_train(config: ml_collections.ConfigDict, steps: int, warmup: int, profile_dir: str | None = None) -> dict:
    multihost.initialize()
    result = bench_train(config, steps, warmup, profile_dir)
    print(format_result(result), flush=True)
    return result
