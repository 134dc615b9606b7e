"""One CPU device against two, side by side in one process: the demo's training steps, or a config's.

`arc-jax demo` makes a 2-core host two jax CPU devices and splits every training stage's batch rows
over them (arc_jax/demo/run.py, arc_jax/train/xla_cpu.py). This script times the same step on one
device and on two, alternating steps on the same batches (the order flipped every round), and prints
the medians and the median of the rounds' ratios: on a shared host whose speed moves by tens of
percent within a minute, only neighbouring steps compare. Run it with two host devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python notes/cpu_devices_ab.py decoder_lm \\
        --demo-data arc_jax_demo/data --rounds 40
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python notes/cpu_devices_ab.py demo_arc_finetune \\
        --demo-data arc_jax_demo/data --rounds 40
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python notes/cpu_devices_ab.py configs/bench_cpu_55m.py --rounds 12

`decoder_lm` is the demo's decoder LM step (configs/demo_decoder.py); demo_arc_pretrain and
demo_arc_finetune are the demo's ARC stages (their decoder random: the step's cost is the same);
anything else is a config file. `--demo-data` is a demo's data folder (`arc-jax demo` writes it).
Both variants wait on each step, as the demo does on two CPU devices (xla_cpu.one_run_at_a_time).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time

import jax
import numpy as np

from arc_jax import sharding


@contextlib.contextmanager
def devices_seen(n: int):
    """jax.device_count and the trainer's mesh limited to the first `n` devices while a variant builds."""
    count, make_mesh = jax.device_count, sharding.make_mesh
    jax.device_count = lambda: n
    sharding.make_mesh = lambda shape, devices=None: make_mesh(shape, jax.devices()[:n])
    try:
        yield
    finally:
        jax.device_count, sharding.make_mesh = count, make_mesh


def lm_variant(demo_data: str, n: int):
    """(step, state, batches) of the demo's decoder LM on the first `n` devices."""
    from arc_jax.data.tokenizers import load_tokenizer
    from arc_jax.demo import decoder_lm as lm, run as demo

    config = demo._load("demo_decoder.py", [f"data.dir={demo_data}"])
    data_dir = lm.prepare_data(config)
    data = lm.build_data(config, data_dir, load_tokenizer(data_dir / "tokenizer.model"))
    module = lm.Decoder(lm.backbone_from_config(config), unroll_layers=config.get("unroll_layers", False))
    with devices_seen(n):
        mesh = lm.data_parallel_mesh(data.rows)
        state, _, ckpts = lm._init_or_restore(config, module, tempfile.mkdtemp(prefix="cpu_devices_ab_"), False, mesh)
    ckpts.close()
    step = lm.make_train_step(module, lm.optimizer_config(config), mesh)
    feed = data.batches({"epoch": 0, "index": 0})
    return (lambda s, b: step(s, b)), state, [next(feed)[0] for _ in range(4)]


def trainer_variant(name: str, demo_data: str | None, n: int):
    """(step, state, batches) of the trainer's step for a demo ARC stage or a config file on `n` devices."""
    from arc_jax.config_loading import load_config
    from arc_jax.train.trainer import Trainer

    if name.startswith("demo_arc"):
        from arc_jax.demo import run as demo

        common = [f"data.dir={demo_data}", "seed=0"]
        config = demo._arc_config(f"{name}.py", demo._load("demo_decoder.py", common), common)
    else:
        config = load_config(name, [])
    with devices_seen(n):
        trainer = Trainer(config, tempfile.mkdtemp(prefix="cpu_devices_ab_"), keep_random_decoders=False)
    batches = [trainer._next_batch(0)[0] for _ in range(4)]
    step, params = trainer.steps[0], trainer.decoders[0].params
    return (lambda s, b: step(s, params, b)), trainer.state, batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", help="decoder_lm, demo_arc_pretrain, demo_arc_finetune or a config file")
    parser.add_argument("--demo-data", help="a demo's data folder (for the demo's stages)")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    if jax.device_count() < 2:
        raise SystemExit("needs two devices: XLA_FLAGS=--xla_force_host_platform_device_count=2")
    built = {}
    for n in (1, 2):
        step, state, batches = (lm_variant(args.demo_data, n) if args.what == "decoder_lm"
                                else trainer_variant(args.what, args.demo_data, n))
        state, metrics = step(state, batches[0])  # compiles
        jax.block_until_ready(state)
        built[n] = {"step": step, "state": state, "batches": batches, "seconds": [], "loss": float(metrics["loss"])}
        print(f"{n} device(s): first loss {built[n]['loss']:.6f}", flush=True)
    for r in range(args.rounds):
        for n in (1, 2) if r % 2 == 0 else (2, 1):
            v = built[n]
            t0 = time.perf_counter()
            v["state"], _ = v["step"](v["state"], v["batches"][r % len(v["batches"])])
            jax.block_until_ready(v["state"])
            v["seconds"].append(time.perf_counter() - t0)
    one, two = (np.asarray(built[n]["seconds"]) for n in (1, 2))
    ratio = two / one
    print(f"{args.what}: one device {np.median(one) * 1e3:.1f} ms, two {np.median(two) * 1e3:.1f} ms a step (medians "
          f"of {args.rounds}); two / one: median {np.median(ratio):.3f}, quartiles {np.percentile(ratio, 25):.3f}-"
          f"{np.percentile(ratio, 75):.3f}")


if __name__ == "__main__":
    main()
