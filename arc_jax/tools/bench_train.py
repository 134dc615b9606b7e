"""`arc-jax bench train`: step time, tokens/s and MFU of a config's train step, rerunnable anywhere.

The step is the trainer's own (same jit, shardings, donation), run on batches drawn beforehand
from the config's pipeline, so the figure is the device step alone: compile and warm-up steps are
excluded, then `steps` steps are timed to the last one's completion. MFU = analytic model FLOPs
of the step (arc_jax/train/flops.py) / step time / peak, where the peak is the measured rate of a
large jitted matmul in the config's compute dtype on this backend, times the device count.
Random decoders stay in memory (nothing is written but a temporary workdir).
"""

from __future__ import annotations

import itertools
import tempfile
import time

import jax
import ml_collections

from arc_jax.train import flops, multihost


def bench_train(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2) -> dict:
    from arc_jax.train.trainer import Trainer, decoder_at

    with tempfile.TemporaryDirectory(prefix="arc_jax_bench_") as workdir:
        trainer = Trainer(config, workdir, keep_random_decoders=False)
        run = trainer.run
        batches = []
        for i in range(min(steps + warmup, 8)):  # a few distinct batches, cycled
            d = decoder_at(run.decoder_schedule, run.seed, i + 1, len(trainer.decoders), run.decoder_weights)
            batch, tokens = trainer._next_batch(d)
            batches.append((d, batch, tokens))
        cycle = itertools.cycle(batches)
        state = trainer.state

        def run_steps(n):
            nonlocal state
            tokens = flop_count = 0
            metrics = None
            for _ in range(n):
                d, batch, t = next(cycle)
                state, metrics = trainer.steps[d](state, trainer.decoders[d].params, batch)
                tokens += t
                flop_count += trainer.flops_per_step[d]
            jax.block_until_ready((state, metrics))
            return tokens, flop_count, metrics

        peak_before = flops.measure_matmul_peak(run.compute_dtype)
        t0 = time.perf_counter()
        run_steps(warmup)
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens, flop_count, metrics = run_steps(steps)
        seconds = time.perf_counter() - t0
        # The best of two measurements around the steps: a busy machine lowers the peak, not the MFU.
        peak_one = max(peak_before, flops.measure_matmul_peak(run.compute_dtype))
        trainer.checkpoints.close()

    peak = peak_one * jax.device_count()
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    n_frozen = sum(x.size for dec in trainer.decoders for x in jax.tree.leaves(dec.params))
    result = {
        "backend": jax.default_backend(), "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "processes": jax.process_count(), "compute_dtype": run.compute_dtype,
        "encoder_parameters": n_params, "decoder_parameters": n_frozen,
        "steps": steps, "step_seconds": seconds / steps, "warmup_and_compile_seconds": compile_seconds,
        "tokens_per_second": tokens / seconds, "model_flops_per_step": flop_count / steps,
        "achieved_flops_per_second": flop_count / seconds, "peak_flops_per_second": peak,
        "mfu": flops.mfu(flop_count / steps, seconds / steps, peak), "loss": float(metrics["loss"]),
    }
    return result


def format_result(r: dict) -> str:
    return "\n".join([
        f"backend      {r['backend']} x{r['devices']} ({r['device_kind']}), {r['compute_dtype']} compute",
        f"model        encoder {r['encoder_parameters'] / 1e6:,.1f}M trainable, decoder(s) "
        f"{r['decoder_parameters'] / 1e6:,.1f}M frozen",
        f"step time    {r['step_seconds'] * 1e3:,.1f} ms  ({r['steps']} steps; warm-up + compile "
        f"{r['warmup_and_compile_seconds']:.1f} s)",
        f"throughput   {r['tokens_per_second']:,.0f} decoder tokens/s",
        f"model FLOPs  {r['model_flops_per_step'] / 1e12:,.4f} TFLOP/step, {r['achieved_flops_per_second'] / 1e12:,.3f}"
        f" TFLOP/s achieved",
        f"peak         {r['peak_flops_per_second'] / 1e12:,.3f} TFLOP/s (measured matmul, all devices)",
        f"MFU          {r['mfu']:.1%}",
    ])


def main_train(config: ml_collections.ConfigDict, steps: int, warmup: int) -> dict:
    multihost.initialize()
    result = bench_train(config, steps, warmup)
    print(format_result(result), flush=True)
    return result
