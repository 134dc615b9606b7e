"""`arc-jax bench train` (step time, tokens/s, MFU) and `arc-jax bench inference` (compressed vs full
context)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks")
    bench.set_defaults(config_overrides=True)  # --config.a.b=value (bench train)
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    _add_train(benches)
    _add_inference(benches)


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1 (lengths, counts), so a bad value is a usage error, not a traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected an int >= 1")
    return value


def _add_train(benches) -> None:
    p = benches.add_parser("train", help="step time, tokens/s and MFU of a config's train step",
                           description="Run warm steps of the config's train step (its own jit, shardings and "
                                       "batches) and print step time, tokens/s and MFU against the measured "
                                       "matmul peak of this backend. Override config fields with "
                                       "--config.a.b=value.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, compile included (default 2)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=run_train)


def _add_inference(benches) -> None:
    p = benches.add_parser("inference", help="time and FLOPs of compressed vs full-context answering",
                           description="For each context length and generated-token count, answer one question "
                                       "(batch 1, --prompt-len tokens after the context) with the full context in "
                                       "the decoder's prompt and with the context compressed by the encoder; "
                                       "report analytic forward FLOPs and measured time of both (compile "
                                       "excluded, median of --repeats) and their ratios. Random weights of the "
                                       "preset shapes; the default 'scaled' models run on a CPU in a few minutes. "
                                       "Writes inference_bench.md, .json and .png (with matplotlib) to --out.")
    p.add_argument("--out", default="arc_jax_runs/bench_inference", help="output folder")
    p.add_argument("--encoder-preset", default="scaled",
                   choices=("scaled", "tiny", "llama3.2-3b", "llama3.2-1b", "qwen3-0.6b", "qwen3-1.7b",
                            "scaled-llama3.2-1b", "scaled-qwen3-0.6b", "scaled-qwen3-1.7b"),
                   help="llama3.2-3b: the released ARC encoder's shapes; llama3.2-1b, qwen3-0.6b, qwen3-1.7b: "
                        "the same encoder on a 1B-class backbone; scaled-*: those scaled for a CPU, as 'scaled' "
                        "is the 3B one (default scaled)")
    p.add_argument("--decoder-preset", default="scaled",
                   choices=("scaled", "tiny", "llama3.1-8b", "mistral-7b", "llama2-7b", "olmo-7b", "qwen3-8b",
                            "qwen2.5-7b"))
    p.add_argument("--pooling", type=positive_int, default=4, help="pooling factor PF (default 4)")
    p.add_argument("--context-lens", type=positive_int, nargs="+",
                   help="context lengths in tokens (default 256 .. 4096 on CPU, 256 .. 16384 elsewhere)")
    p.add_argument("--new-tokens", type=positive_int, nargs="+", default=[1, 100],
                   help="tokens generated (default 1 100)")
    p.add_argument("--prompt-len", type=positive_int, default=32,
                   help="question tokens after the context (default 32)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="default float32 on CPU, bfloat16 elsewhere")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timed runs per pipeline, the median kept (default 3)")
    p.add_argument("--buckets-per-octave", type=positive_int, default=64,
                   help="decoder prompt/cache length buckets per octave (default 64: at most 1/64 padding; "
                        "1 = generate's default powers of two)")
    p.add_argument("--attention", choices=("xla", "jax_nn", "splash"),
                   help="attention implementation of both models (default jax_nn on GPU: cuDNN flash attention; "
                        "xla elsewhere)")
    p.set_defaults(func=run_inference)


def run_train(args: argparse.Namespace):
    from arc_jax.tools.bench_train import main_train
    from arc_jax.config_loading import load_config

    result = main_train(load_config(args.config, args.overrides), args.steps, args.warmup)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def run_inference(args: argparse.Namespace):
    from arc_jax.tools.bench_inference import main_inference

    main_inference(args.encoder_preset, args.decoder_preset, args.pooling, args.context_lens, args.new_tokens,
                   args.prompt_len, args.dtype, args.repeats, args.buckets_per_octave, args.out, args.attention)
