"""Two or more variants of the trainer's step timed side by side in one process, on the same batches.

On a shared host whose speed moves by tens of percent within a minute, timing `arc-jax bench train`
runs one after the other cannot resolve a change of a few percent. This script builds one trainer per
variant (each compiled after its variant's setup ran), then times one step of each in turn, the order
alternating every round, and reports the median of each round's ratio to the first variant:
neighbouring steps see the same host.

A variant is a setup function that patches arc_jax before its trainer compiles, named in a module's
`VARIANTS = {name: setup}`; the first is the baseline. The 2026-12-05 A/B of README's Benchmark put
the functions of the commit before back in (`git show 1b834fb:arc_jax/model/attention.py >
old_attention.py`, likewise `apply_rope` and `FeedForward.__call__`) for the baseline:

    PYTHONPATH=DIR_OF_VARIANTS python notes/step_ab.py variants_module --rounds 24

`--set` overrides config fields as `arc-jax train` does; the demo's ARC stages on its two CPU
devices with and without XLA:CPU's tree reductions (notes/tree_reduction_variants.py):

    JAX_NUM_CPU_DEVICES=2 PYTHONPATH=notes python notes/step_ab.py tree_reduction_variants \
        --config configs/demo_arc_finetune.py --set=--config.data.dir=DEMO/data \
        --set=--config.model.decoders.0.path=DEMO/decoder_lm/decoder --set=--config.init_encoder=DEMO/arc_pretrain

Reports each round's step times, the medians and the ratios' median and quartiles, and the last
losses of each variant (equal where a change keeps the float sums' order).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import tempfile
import time

import jax
import numpy as np


def build(config_path: str, n_batches: int, overrides: list[str] = ()):
    """A trainer of the config (with `--config.a.b=value` overrides), its first batches and its state
    after one (compiling) step."""
    from arc_jax.config_loading import load_config
    from arc_jax.train.trainer import Trainer, decoder_at

    trainer = Trainer(load_config(config_path, list(overrides)), tempfile.mkdtemp(prefix="step_ab_"), keep_random_decoders=False)
    run = trainer.run
    batches = []
    for i in range(n_batches):
        d = decoder_at(run.decoder_schedule, run.seed, i + 1, len(trainer.decoders), run.decoder_weights)
        batches.append((d, trainer._next_batch(d)[0]))
    d, batch = batches[0]
    state, metrics = trainer.steps[d](trainer.state, trainer.decoders[d].params, batch)
    jax.block_until_ready(state)
    return trainer, state, batches, float(metrics["loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", help="a module defining VARIANTS = {name: setup function}, the first the baseline")
    parser.add_argument("--config", default="configs/bench_cpu_55m.py")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--set", action="append", default=[], metavar="--config.a.b=value",
                        help="a config override (repeatable; write it --set=--config.a.b=value)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    from arc_jax.train.flops import measure_matmul_peak

    built = {}
    for name, setup in importlib.import_module(args.variants).VARIANTS.items():
        setup()
        t0 = time.perf_counter()
        trainer, state, batches, loss = build(args.config, args.batches, args.set)
        print(f"{name}: compiled and stepped in {time.perf_counter() - t0:.1f} s, loss {loss:.7f}", flush=True)
        built[name] = {"trainer": trainer, "state": state, "batches": batches, "seconds": [], "losses": []}
    names = list(built)
    print(f"matmul peak {measure_matmul_peak() / 1e12:.3f} TFLOP/s", flush=True)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            v = built[name]
            trainer, (d, batch) = v["trainer"], v["batches"][r % len(v["batches"])]
            t0 = time.perf_counter()
            v["state"], metrics = trainer.steps[d](v["state"], trainer.decoders[d].params, batch)
            jax.block_until_ready(v["state"])
            v["seconds"].append(time.perf_counter() - t0)
            v["losses"].append(float(metrics["loss"]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {built[n]['seconds'][-1]:.3f} s" for n in names),
              flush=True)
    print(f"matmul peak {measure_matmul_peak() / 1e12:.3f} TFLOP/s")
    base = built[names[0]]["seconds"]
    for name in names:
        s = built[name]["seconds"]
        line = f"{name}: median {np.median(s):.3f} s a step"
        if name != names[0]:
            ratios = np.asarray(s) / np.asarray(base)
            line += (f"; ratio to {names[0]}: median {np.median(ratios):.3f}, quartiles "
                     f"{np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}")
        print(line + f"; last losses {built[name]['losses'][-3:]}")


if __name__ == "__main__":
    main()
