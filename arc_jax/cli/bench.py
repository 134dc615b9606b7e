"""`arc-jax bench train` (step time, tokens/s, MFU), `arc-jax bench inference` (compressed vs full
context, one request) and `arc-jax bench serve` (full text, online compression and the store, many
requests at once)."""

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
    _add_serve(benches)


ENCODER_PRESETS = ("scaled", "tiny", "llama3.2-3b", "llama3.2-1b", "qwen3-0.6b", "qwen3-1.7b", "scaled-llama3.2-1b",
                   "scaled-qwen3-0.6b", "scaled-qwen3-1.7b")
ENCODER_PRESETS_HELP = ("llama3.2-3b: the released ARC encoder's shapes; llama3.2-1b, qwen3-0.6b, qwen3-1.7b: the same "
                        "encoder on a 1B-class backbone; scaled-*: those scaled for a CPU, as 'scaled' is the 3B one "
                        "(default scaled)")
DECODER_PRESETS = ("scaled", "tiny", "llama3.1-8b", "mistral-7b", "llama2-7b", "olmo-7b", "qwen3-8b", "qwen2.5-7b")


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
    p.add_argument("--profile", metavar="DIR",
                   help="after the timed steps, trace 3 more into DIR (jax.profiler: TensorBoard's profile plugin "
                        "or xprof) and print the largest ops' device time a step, by kind")
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
    _add_model_arguments(p, "arc_jax_runs/bench_inference", "256 .. 4096 on CPU, 256 .. 16384 elsewhere")
    p.add_argument("--new-tokens", type=positive_int, nargs="+", default=[1, 100],
                   help="tokens generated (default 1 100)")
    _add_run_arguments(p, "pipeline")
    p.set_defaults(func=run_inference)


def _add_model_arguments(p: argparse.ArgumentParser, out: str, context_lens: str) -> None:
    """bench inference's and bench serve's output folder, model presets, pooling and context lengths."""
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--encoder-preset", default="scaled", choices=ENCODER_PRESETS, help=ENCODER_PRESETS_HELP)
    p.add_argument("--decoder-preset", default="scaled", choices=DECODER_PRESETS)
    p.add_argument("--pooling", type=positive_int, default=4, help="pooling factor PF (default 4)")
    p.add_argument("--context-lens", type=positive_int, nargs="+",
                   help=f"context lengths in tokens (default {context_lens})")


def _add_run_arguments(p: argparse.ArgumentParser, timed: str) -> None:
    """bench inference's and bench serve's question length, dtype, repeats, length buckets and attention."""
    p.add_argument("--prompt-len", type=positive_int, default=32,
                   help="question tokens after the context (default 32)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="default float32 on CPU, bfloat16 elsewhere")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help=f"timed runs per {timed}, the median kept (default 3)")
    p.add_argument("--buckets-per-octave", type=positive_int, default=64,
                   help="decoder prompt/cache length buckets per octave (default 64: at most 1/64 padding; "
                        "1 = generate's default powers of two)")
    p.add_argument("--attention", choices=("xla", "jax_nn", "splash"),
                   help="attention implementation of both models (default jax_nn on GPU: cuDNN flash attention; "
                        "xla elsewhere)")


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value}: expected an int >= 2 (decode throughput needs a decode step)")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value}: expected a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0: expected a number > 0")
    return value


def _add_serve(benches) -> None:
    p = benches.add_parser("serve", help="TTFT, decode tokens/s and memory of full text, online compression and "
                                         "the store, at several batch sizes",
                           description="For each context length and batch size, answer a batch of requests (each "
                                       "its own context and --prompt-len question) three ways: the full context in "
                                       "the decoder's prompt, the contexts compressed by the encoder on the request "
                                       "path, and the compressed contexts read from a store written beforehand. "
                                       "Reports time to first token, decode tokens/s and weights + KV-cache bytes "
                                       "(compile excluded, median of --repeats), and the largest batch of each that "
                                       "fits --memory-budget. Random weights of the preset shapes. Writes "
                                       "serve_bench.md, .json and .png (with matplotlib) to --out.")
    _add_model_arguments(p, "arc_jax_runs/bench_serve", "1024 2048 4096 on CPU, 1024 4096 16384 elsewhere")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 8, 32, 64],
                   help="requests answered together (default 1 8 32 64); each pipeline also runs at its largest "
                        "batch in --memory-budget")
    p.add_argument("--memory-budget", type=positive_float,
                   help="GiB for weights + KV cache (default 5x the decoder's weights: an 80 GB H100 over Llama "
                        "3.1 8B's 16 GB)")
    p.add_argument("--new-tokens", type=at_least_two, default=32,
                   help="tokens generated per request, >= 2 (default 32)")
    _add_run_arguments(p, "case")
    p.add_argument("--max-case-seconds", type=non_negative_float,
                   help="skip a case (one pipeline at one batch) whose estimated warm-up + repeats exceed this "
                        "(default 60 on CPU; 0: run the full grid, the default elsewhere)")
    p.add_argument("--store-records", type=positive_int, default=8,
                   help="distinct contexts per length in the store; requests cycle through them (default 8)")
    p.add_argument("--store-vector-dtype", choices=("float32", "bfloat16"),
                   help="the store's vectors (default: the encoder's compute dtype)")
    p.add_argument("--store-pq", metavar="M:BITS",
                   help="product-quantised store vectors, M sub-quantisers of 2**BITS centroids (needs faiss: "
                        "pip install 'arc-jax[pq]')")
    p.set_defaults(func=run_serve)


def run_train(args: argparse.Namespace):
    from arc_jax.tools.bench_train import main_train
    from arc_jax.config_loading import load_config

    result = main_train(load_config(args.config, args.overrides), args.steps, args.warmup, args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def run_inference(args: argparse.Namespace):
    from arc_jax.tools.bench_inference import main_inference

    main_inference(args.encoder_preset, args.decoder_preset, args.pooling, args.context_lens, args.new_tokens,
                   args.prompt_len, args.dtype, args.repeats, args.buckets_per_octave, args.out, args.attention)


def run_serve(args: argparse.Namespace):
    from arc_jax.tools.bench_serve import main_serve

    main_serve(args.encoder_preset, args.decoder_preset, args.pooling, args.context_lens, args.batch_sizes,
               args.memory_budget, args.new_tokens, args.prompt_len, args.dtype, args.repeats, args.buckets_per_octave,
               args.attention, args.max_case_seconds, args.store_records, args.store_vector_dtype, args.store_pq,
               args.out)
