"""The `arc-jax` command line. Each subcommand lives in its own function and explains itself."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_DESCRIPTION = """arc_jax: train, convert and run ARC-Encoder context compressors in JAX.

Subcommands:
  demo       the paper in miniature on CPU (~13 min): synthetic corpus, decoder LM trained from
             scratch, ARC4 encoder (ARC8 optional) pretrained and fine-tuned, closed/open/compressed QA
  convert    read an encoder or decoder in any supported layout, write an arc_jax checkpoint
             (or build a fresh encoder from a Llama backbone to start pretraining)
  export     write an encoder or decoder in a released / reference / Hugging Face / Meta layout
  roundtrip  generate a tiny random encoder and decoder, write and read every layout, check it
  data       check a training config's input pipeline (data check --config CONFIG)
  train      train an encoder: train --config CONFIG --workdir DIR [--config.a.b=value ...]
  generate   answer a prompt with compressed context files (KV-cached decoding)
  eval       score closed-book, open-book and compressed contexts on jsonl benchmarks
  bench      train: step time, tokens/s and MFU of a config's train step;
             inference: time and FLOPs of compressed vs full-context answering
"""


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--kind", choices=("auto", "encoder", "decoder"), default="auto",
                   help="what the source holds (default: detected from its files)")
    p.add_argument("--dtype", choices=("keep", "float32", "bfloat16"), default="keep",
                   help="cast the parameters (default: keep the source's dtype)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def progress_bar(description: str):
    from arc_jax.convert.progress import progress_bar as bar

    return bar(description)


def _read_any(src: Path, kind: str):
    """(kind, config, params) from any layout; kind "auto" tries encoder layouts first."""
    from arc_jax import convert

    if kind != "auto":
        reader = convert.read_encoder if kind == "encoder" else convert.read_decoder
        return (kind, *reader(src))
    try:
        convert.detect_format(src, "encoder")
        return ("encoder", *convert.read_encoder(src))
    except convert.ConversionError as encoder_error:
        try:
            convert.detect_format(src, "decoder")
        except convert.ConversionError:
            raise encoder_error from None
        return ("decoder", *convert.read_decoder(src))


def _cast(params, dtype: str):
    if dtype == "keep":
        return params
    import jax
    import ml_dtypes
    import numpy as np

    target = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    return jax.tree.map(lambda x: np.asarray(x).astype(target), params)


def _convert_or_export(args, out_format: str | None):
    from arc_jax import convert

    start = time.perf_counter()
    with progress_bar(f"reading {args.src}"):
        kind, cfg, params = _read_any(Path(args.src), args.kind)
    params = _cast(params, args.dtype)
    fmt = out_format or args.format
    writer = convert.write_encoder if kind == "encoder" else convert.write_decoder
    with progress_bar(f"writing {fmt} to {args.out}"):
        out = writer(cfg, params, args.out, fmt, overwrite=args.overwrite)
    n = sum(x.size for x in __import__("jax").tree.leaves(params))
    print(f"wrote {kind} ({n / 1e6:.2f}M parameters) as {fmt} to {out} in {time.perf_counter() - start:.1f}s")


def _convert(args):
    if not args.fresh_encoder:
        return _convert_or_export(args, "arc_jax")
    from arc_jax import convert
    from arc_jax.convert.fresh import fresh_encoder

    start = time.perf_counter()
    with progress_bar(f"reading {args.src}"):
        cfg, params = fresh_encoder(
            args.src, n_truncated_layers=args.n_truncated_layers, compress_rates=args.compress_rates,
            pool_type=args.pool_type, causal=args.causal, n_memory_tokens=args.memory_tokens,
            out_dims=args.decoder_dims, hidden_dim=args.projector_hidden, seed=args.seed)
    params = _cast(params, args.dtype)
    out = convert.write_encoder(cfg, params, args.out, "arc_jax", overwrite=args.overwrite)
    print(f"wrote a fresh encoder ({cfg.backbone.n_layers} layers, pooling {list(cfg.compress_rates)}, "
          f"{cfg.n_decoders} decoder head(s)) to {out} in {time.perf_counter() - start:.1f}s")


def _roundtrip(args):
    from arc_jax.tools.roundtrip import run_roundtrip

    ok = run_roundtrip(Path(args.workdir), seed=args.seed)
    return 0 if ok else 1


def _demo(args):
    from arc_jax.demo.run import SHOTS, run_demo

    if args.shots is None:
        args.shots = SHOTS
    run_demo(args.workdir, resume=args.resume, smoke=args.smoke, pooling_factors=tuple(args.pooling_factors),
             max_examples=args.max_examples, shots=args.shots)


def _data_check(args):
    from arc_jax.config_loading import load_config
    from arc_jax.data.check import data_check

    data_check(load_config(args.config, args.overrides), args.batches)


def _train(args):
    from arc_jax.config_loading import load_config
    from arc_jax.train import multihost

    multihost.initialize(args.coordinator, args.num_processes, args.process_id)  # before any device is touched
    config = load_config(args.config, args.overrides)
    from arc_jax.train.trainer import train

    train(config, args.workdir, log_every=args.log_every)


def _bench_train(args):
    import json

    from arc_jax.tools.bench_train import main_train
    from arc_jax.config_loading import load_config

    result = main_train(load_config(args.config, args.overrides), args.steps, args.warmup)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def _bench_inference(args):
    from arc_jax.tools.bench_inference import main_inference

    main_inference(args.encoder_preset, args.decoder_preset, args.pooling, args.context_lens, args.new_tokens,
                   args.prompt_len, args.dtype, args.repeats, args.buckets_per_octave, args.out, args.attention)


def _pipeline(args):
    """The ARCPipeline of the model options `_add_model_arguments` declares."""
    import arc_jax

    dtype = None if args.dtype == "keep" else args.dtype
    return arc_jax.ARCPipeline(arc_jax.load_encoder(args.encoder, dtype=dtype),
                               arc_jax.load_decoder(args.decoder, dtype=dtype), args.decoder_index,
                               args.encoder_tokenizer, args.decoder_tokenizer)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", required=True, help="encoder checkpoint (any layout arc_jax reads)")
    p.add_argument("--decoder", required=True, help="decoder checkpoint (any layout arc_jax reads)")
    p.add_argument("--decoder-index", type=int, default=0, help="the encoder head of this decoder (default 0)")
    p.add_argument("--encoder-tokenizer", help="tokenizer file or folder (default: in the encoder folder)")
    p.add_argument("--decoder-tokenizer", help="tokenizer file or folder (default: in the decoder folder)")
    p.add_argument("--dtype", choices=("keep", "float32", "bfloat16"), default="keep",
                   help="compute dtype (default: the checkpoints')")


def _generate(args):
    from arc_jax.data.bad_records import DataError

    texts = []
    for path in args.context:
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read context file ({getattr(e, 'strerror', None) or e})") from None
    try:
        pipe = _pipeline(args)
        # Each context's compressed block then a newline, in the order given, then the prompt.
        prompt = [piece for block in pipe.compress(texts) for piece in (block, "\n")] + [args.prompt]
        answer = pipe.generate([prompt], args.max_new_tokens, args.temperature, args.top_p, args.seed)[0]
    except ValueError as e:  # inputs the models cannot take (empty context, wrong decoder index, ...)
        raise DataError(str(e)) from None
    print(answer)


def _eval(args):
    from arc_jax.data.bad_records import DataError
    from arc_jax.evaluation.harness import evaluate, markdown_table, parse_benchmark

    try:
        benchmarks = [parse_benchmark(spec) for spec in args.data]
        pipe = _pipeline(args)
        results = evaluate(pipe, benchmarks, args.modes.split(","), args.out, shots=args.shots,
                           max_examples=args.max_examples, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, seed=args.seed, max_passages=args.max_passages)
    except ValueError as e:  # bad options or inputs the models cannot take: one line, no traceback
        raise DataError(str(e)) from None
    out = Path(args.out)
    print(markdown_table(results), end="")
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'predictions'}/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arc-jax", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("convert", help="any supported layout -> arc_jax checkpoint",
                       description="Read an encoder (released Hugging Face ARC-Encoder, reference training "
                                   "checkpoint) or a decoder (Meta/Mistral consolidated, Hugging Face "
                                   "transformers) and write an arc_jax (Orbax) checkpoint. The layout is "
                                   "detected from the files. Nothing is written on failure.")
    p.add_argument("src", help="source folder")
    p.add_argument("out", help="output folder (arc_jax checkpoint)")
    _add_common(p)
    fresh = p.add_argument_group("fresh encoder (--fresh-encoder: SRC is a decoder backbone, e.g. Llama 3.2 3B)")
    fresh.add_argument("--fresh-encoder", action="store_true",
                       help="build a new encoder to pretrain: truncated backbone, <Rec>/<Cont> = ones, "
                            "projectors initialised like torch.nn.Linear")
    fresh.add_argument("--n-truncated-layers", type=int, default=2, help="last layers removed (default 2)")
    fresh.add_argument("--compress-rates", type=int, nargs="*", default=[-8],
                       help="one entry per pooling layer, -k pools by k (default -8)")
    fresh.add_argument("--pool-type", choices=("mean", "last"), default="mean")
    fresh.add_argument("--causal", action="store_true", help="causal encoder attention (an ablation)")
    fresh.add_argument("--memory-tokens", type=int, default=0,
                       help="ICAE-like baseline: n memory tokens per text (give --compress-rates no value)")
    fresh.add_argument("--decoder-dims", type=int, nargs="+", default=[4096],
                       help="width of each decoder the encoder will serve (one head each; default 4096)")
    fresh.add_argument("--projector-hidden", type=int, default=2048, help="projector bottleneck (default 2048)")
    fresh.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="any supported layout -> released / reference / hf / meta",
                       description="Write an encoder as 'released' (Hugging Face ARC-Encoder: model.safetensors "
                                   "+ config.json) or 'reference' (reference training checkpoint), or a decoder "
                                   "as 'hf' (transformers) or 'meta' (consolidated.00.pth + params.json). The "
                                   "source may be in any supported layout. Nothing is written on failure.")
    p.add_argument("src", help="source folder (an arc_jax checkpoint or any supported layout)")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", required=True, choices=("released", "reference", "hf", "meta", "arc_jax"))
    _add_common(p)
    p.set_defaults(func=lambda a: _convert_or_export(a, None))

    p = sub.add_parser("roundtrip", help="self-check: tiny random models through every layout",
                       description="Generate a tiny random ARC encoder and decoder, write them in every layout "
                                   "arc_jax supports, read them back, and check the parameters are bit-identical "
                                   "and the models compute the same outputs. Needs no download.")
    p.add_argument("--workdir", default="arc_jax_runs/roundtrip", help="where the checkpoints are written")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_roundtrip)

    p = sub.add_parser("demo", help="the paper in miniature on CPU: train a decoder and ARC encoders, evaluate",
                       description="Generate a synthetic corpus, train a small decoder LM from scratch, pretrain "
                                   "and fine-tune ARC encoders against it, and evaluate closed-book, open-book "
                                   "and compressed QA on held-out people (~13 min on 2 CPU cores).")
    p.add_argument("--workdir", default="arc_jax_demo", help="where everything is written (default arc_jax_demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --workdir")
    p.add_argument("--smoke", action="store_true", help="a few steps of tiny models in every stage (seconds)")
    p.add_argument("--pooling-factors", type=int, nargs="+", default=[4],
                   help="ARC encoders to train (default 4; `4 8` adds ARC8, ~4 more minutes)")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate at most this many held-out questions")
    p.add_argument("--shots", type=int, default=None, help="in-context examples in the evaluation prompts")
    p.set_defaults(func=_demo)

    data = sub.add_parser("data", help="input pipeline tools",
                          description="Input pipeline tools. `arc-jax data check --config CONFIG` runs the "
                                      "config's pipeline for some batches and reports samples per source, bad "
                                      "records (file:line, reason), token counts, packing efficiency and tokens/s.")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("check", help="run the input pipeline of a config and report",
                            description="Run the input pipeline of a training config for --batches batches and "
                                        "report what it produced. Override config fields with --config.a.b=value "
                                        "(e.g. --config.data.sources=a.jsonl:2,b.jsonl:1).")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--batches", type=int, default=20, help="batches to draw (default 20)")
    p.set_defaults(func=_data_check)

    p = sub.add_parser("train", help="train an ARC encoder",
                       description="Train the encoder of a config against its frozen decoder(s). The workdir "
                                   "keeps checkpoints (train state, input state, config), the decoder and "
                                   "TensorBoard logs; running again with the same workdir resumes. Override "
                                   "config fields with --config.a.b=value.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--workdir", required=True, help="run folder (created; resumed when it holds checkpoints)")
    p.add_argument("--log-every", type=int, default=None, help="steps between log lines (default: config.log_every)")
    p.add_argument("--coordinator", help="host:port of process 0 in a multi-process run (default: "
                                         "$JAX_COORDINATOR_ADDRESS, or detected on TPU pods and under SLURM)")
    p.add_argument("--num-processes", type=int, help="processes in a multi-process run ($JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="this process's index ($JAX_PROCESS_ID)")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="answer a prompt with compressed context files",
                       description="Compress each --context file with the encoder, place the compressed blocks "
                                   "before the prompt (BOS, block 1, newline, block 2, newline, ..., prompt text) "
                                   "and print the decoder's answer: greedy at temperature 0, else top-p sampling; "
                                   "it stops at the decoder tokenizer's EOS or after --max-new-tokens tokens. "
                                   "Tokenizers default to the tokenizer file in each checkpoint folder.")
    _add_model_arguments(p)
    p.add_argument("--context", nargs="*", default=[], metavar="FILE", help="text files to compress, in order")
    p.add_argument("--prompt", required=True,
                   help="the text after the contexts (in bash, $'Question: ...\\nAnswer:' holds a newline)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.8, help="nucleus kept when sampling (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("eval", help="score closed-book, open-book and compressed contexts on jsonl benchmarks",
                       description="Evaluate an encoder + decoder on jsonl benchmarks (reference format): "
                                   "5-shot QA (EM, F1), translation (BLEU), summarisation (ROUGE-L) with the "
                                   "prompt 'Document: <C>\\nQuestion: q\\nAnswer: a\\n\\n...', and zero-shot long "
                                   "context (F1, ROUGE-L) in the Llama 2 Chat template, each in the given modes: "
                                   "closed_book (no document), open_book (its text), compressed (ARC encoder), "
                                   "truncated (its text cut to the compressed length). Greedy decoding; the answer "
                                   "is the first generated line. Writes results.json, results.md and "
                                   "predictions/ to --out and prints the table.")
    _add_model_arguments(p)
    p.add_argument("--data", required=True, nargs="+", metavar="FILE[:KIND]",
                   help="benchmark files; KIND is qa (default), translation[:LANGUAGE], summarization or "
                        "long_context")
    p.add_argument("--modes", default="closed_book,open_book,compressed",
                   help="comma-separated, of closed_book, open_book, compressed, truncated "
                        "(default closed_book,open_book,compressed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--shots", type=int, default=5,
                   help="in-context examples, drawn once and never evaluated (default 5)")
    p.add_argument("--max-examples", type=int, help="evaluate at most this many records per benchmark")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation call (default 8)")
    p.add_argument("--max-new-tokens", type=int,
                   help="default per kind: qa 32, translation and summarization 128, long_context 64")
    p.add_argument("--seed", type=int, default=0, help="draws the shots and the evaluated subset (default 0)")
    p.add_argument("--max-passages", type=int, default=1, help="QA passages joined into a document (default 1)")
    p.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = bench.add_parser("train", help="step time, tokens/s and MFU of a config's train step",
                         description="Run warm steps of the config's train step (its own jit, shardings and "
                                     "batches) and print step time, tokens/s and MFU against the measured "
                                     "matmul peak of this backend. Override config fields with --config.a.b=value.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first, compile included (default 2)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=_bench_train)
    p = bench.add_parser("inference", help="time and FLOPs of compressed vs full-context answering",
                         description="For each context length and generated-token count, answer one question "
                                     "(batch 1, --prompt-len tokens after the context) with the full context in the "
                                     "decoder's prompt and with the context compressed by the encoder; report "
                                     "analytic forward FLOPs and measured time of both (compile excluded, median of "
                                     "--repeats) and their ratios. Random weights of the preset shapes; the default "
                                     "'scaled' models run on a CPU in a few minutes. Writes inference_bench.md, "
                                     ".json and .png (with matplotlib) to --out.")
    p.add_argument("--out", default="arc_jax_runs/bench_inference", help="output folder")
    p.add_argument("--encoder-preset", default="scaled", choices=("scaled", "tiny", "llama3.2-3b"),
                   help="llama3.2-3b: the released ARC encoder's shapes (default scaled)")
    p.add_argument("--decoder-preset", default="scaled",
                   choices=("scaled", "tiny", "llama3.1-8b", "mistral-7b", "llama2-7b", "olmo-7b"))
    p.add_argument("--pooling", type=int, default=4, help="pooling factor PF (default 4)")
    p.add_argument("--context-lens", type=int, nargs="+",
                   help="context lengths in tokens (default 256 .. 4096 on CPU, 256 .. 16384 elsewhere)")
    p.add_argument("--new-tokens", type=int, nargs="+", default=[1, 100], help="tokens generated (default 1 100)")
    p.add_argument("--prompt-len", type=int, default=32, help="question tokens after the context (default 32)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="default float32 on CPU, bfloat16 elsewhere")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per pipeline, the median kept (default 3)")
    p.add_argument("--buckets-per-octave", type=int, default=64,
                   help="decoder prompt/cache length buckets per octave (default 64: at most 1/64 padding; "
                        "1 = generate's default powers of two)")
    p.add_argument("--attention", choices=("xla", "jax_nn", "splash"),
                   help="attention implementation of both models (default jax_nn on GPU: cuDNN flash attention; "
                        "xla elsewhere)")
    p.set_defaults(func=_bench_inference)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.overrides = [u for u in unknown if u.startswith("--config.")]
    if len(args.overrides) != len(unknown) or (args.overrides and args.command not in ("data", "train", "bench")):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 0
    from arc_jax.errors import ArcJaxError

    try:
        return args.func(args) or 0
    except ArcJaxError as e:  # an expected failure: one line, no traceback
        print(f"arc-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
