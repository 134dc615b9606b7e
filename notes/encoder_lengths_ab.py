"""Encoder compression time with attention masked by lengths (one text per row) against the
segment mask (which cuDNN turns into a dense bias), same weights, same process, interleaved.

    python notes/encoder_lengths_ab.py [ENCODER_PRESET DECODER_PRESET CONTEXT_LEN...]

Defaults: the released shapes (llama3.2-3b encoder, PF 4, llama3.1-8b heads) at 1k / 4k / 16k,
bfloat16 and "jax_nn" on a GPU; prints one line per length and the largest output difference.
"""

import statistics
import sys
import time

import jax
import numpy as np

from arc_jax.tools.bench_inference import bench_configs, random_models

REPEATS = 5


def main(encoder_preset="llama3.2-3b", decoder_preset="llama3.1-8b", *context_lens):
    context_lens = [int(n) for n in context_lens] or [1024, 4096, 16384]
    on_gpu = jax.default_backend() == "gpu"
    enc_cfg, dec_cfg = bench_configs(encoder_preset, decoder_preset, 4)
    encoder, _ = random_models(enc_cfg, dec_cfg, "bfloat16" if on_gpu else "float32",
                               attention="jax_nn" if on_gpu else "xla")
    real_run = encoder._run

    def run_forcing(flag):  # the per-chunk choice of Encoder._run, overridden
        def patched(ids, fn, what):
            return real_run(ids, lambda inputs, _: fn(inputs, flag), what)
        return patched

    rng = np.random.default_rng(0)
    print(jax.devices()[0].device_kind, enc_cfg.backbone.n_layers, "encoder layers")
    for n in context_lens:
        context = rng.integers(2, enc_cfg.backbone.vocab_size, n).tolist()
        outputs, times = {}, {True: [], False: []}
        for flag in (True, False):  # compile
            encoder._run = run_forcing(flag)
            outputs[flag] = encoder.compress([context])[0]
        for _ in range(REPEATS):
            for flag in (True, False):
                encoder._run = run_forcing(flag)
                start = time.perf_counter()
                encoder.compress([context])
                times[flag].append(time.perf_counter() - start)
        diff = float(np.max(np.abs(outputs[True] - outputs[False])))
        scale = float(np.max(np.abs(outputs[False])))
        lengths, mask = (statistics.median(times[f]) * 1e3 for f in (True, False))
        print(f"context {n:>6}: lengths {lengths:8.1f} ms  mask {mask:8.1f} ms  mask/lengths "
              f"{mask / lengths:5.2f}  max |diff| {diff:.3g} (max |out| {scale:.3g})", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
