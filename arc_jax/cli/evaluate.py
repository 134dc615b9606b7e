"""`arc-jax eval`: score closed-book, open-book and compressed contexts on jsonl benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from arc_jax.cli.generate import add_model_arguments, load_pipeline


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score closed-book, open-book and compressed contexts on jsonl "
                                           "benchmarks",
                              description="Evaluate an encoder + decoder on jsonl benchmarks (reference format): "
                                          "5-shot QA (EM, F1), translation (BLEU), summarisation (ROUGE-L) with the "
                                          "prompt 'Document: <C>\\nQuestion: q\\nAnswer: a\\n\\n...', and zero-shot "
                                          "long context (F1, ROUGE-L) in the Llama 2 Chat template, each in the "
                                          "given modes: closed_book (no document), open_book (its text), "
                                          "compressed (ARC encoder), truncated (its text cut to the compressed "
                                          "length), by the reference's protocol (default) or arc_jax's. Greedy "
                                          "decoding. A killed evaluation resumes in the same --out. "
                                          "Writes results.json, results.md and predictions/ to --out and prints "
                                          "the table.")
    add_model_arguments(p)
    p.add_argument("--data", required=True, nargs="+", metavar="FILE[:KIND]",
                   help="benchmark files; KIND is qa (default), translation[:LANGUAGE], summarization or "
                        "long_context[:TEMPLATE] (the reference's NQA, Qspr, GvRp, SSFD or QMSum; by default from "
                        "the file name: narrativeqa, qasper, govreport, qmsum)")
    p.add_argument("--modes", default="closed_book,open_book,compressed",
                   help="comma-separated, of closed_book, open_book, compressed, truncated "
                        "(default closed_book,open_book,compressed)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--shots", type=int, default=5,
                   help="in-context examples, drawn once and never evaluated (default 5)")
    p.add_argument("--max-examples", type=int, help="evaluate at most this many records per benchmark")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation call (default 8)")
    p.add_argument("--protocol", choices=("reference", "arc_jax"), default="reference",
                   help="reference (default): kyutai-labs/ARC-Encoder's evaluation (its fixed shuffle chooses "
                        "the shots, the answer ends at the first blank line, 64 new tokens for QA and "
                        "translation, 256 and at most 1000 records for summaries); arc_jax: this project's "
                        "earlier protocol (seeded draw, first line, 32 / 128 new tokens)")
    p.add_argument("--max-new-tokens", type=int,
                   help="default per kind: qa 64, translation 64, summarization 256, long_context 64 (reference); "
                        "qa 32, translation and summarization 128, long_context 64 (arc_jax)")
    p.add_argument("--seed", type=float,
                   help="reference: the shuffle's fixed value (default 0.42, the reference's --seed); arc_jax: the "
                        "seed of the draw (default 0)")
    p.add_argument("--max-passages", type=int, default=1, help="QA passages joined into a document (default 1)")
    p.add_argument("--context-window", type=int, default=4096,
                   help="reference protocol, long context: the decoder's window the prompts are cut to, new "
                        "tokens included (default 4096, Llama 2's)")
    p.add_argument("--step", type=int,
                   help="with a training workdir as --encoder: evaluate its checkpoint of this step (default: the "
                        "latest)")
    p.add_argument("--store",
                   help="read the compressed and truncated modes' documents from this store (arc-jax index of the "
                        "benchmark file with --field passages, or the document field, and the same --max-passages) "
                        "instead of compressing them; refused unless --encoder (in --dtype) wrote it")
    p.add_argument("--pooling-factor", type=int,
                   help="compress with this pooling factor instead of the encoder's (the reference's --comp_rate; "
                        "pooling has no parameters)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    from arc_jax.errors import DataError
    from arc_jax.evaluation.harness import evaluate, markdown_table, parse_benchmark

    try:
        benchmarks = [parse_benchmark(spec) for spec in args.data]
        if args.step is not None:
            args.encoder = str(checkpoint_of_step(Path(args.encoder), args.step))
        pipe = load_pipeline(args)
        if args.pooling_factor is not None:
            pipe.encoder = with_pooling_factor(pipe.encoder, args.pooling_factor)
        store = None
        if args.store:
            import arc_jax

            store = arc_jax.CompressedStore(args.store)  # evaluate checks its encoder and decoder head
        results = evaluate(pipe, benchmarks, args.modes.split(","), args.out, protocol=args.protocol, shots=args.shots,
                           max_examples=args.max_examples, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, seed=args.seed, max_passages=args.max_passages,
                           context_window=args.context_window, store=store)
    except ValueError as e:  # bad options or inputs the models cannot take: one line, no traceback
        raise DataError(str(e)) from None
    out = Path(args.out)
    print(markdown_table(results), end="")
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'predictions'}/")


def checkpoint_of_step(workdir: Path, step: int) -> Path:
    """<workdir>/checkpoints/<step>; ValueError naming the steps there when it has no such one."""
    folder = workdir / "checkpoints" / str(step)
    if not (folder / "state").is_dir():
        steps = sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()) \
            if (workdir / "checkpoints").is_dir() else []
        raise ValueError(f"--step {step}: {workdir} has no checkpoint of that step (its steps: "
                         f"{', '.join(map(str, steps)) or 'none'})")
    return folder


def with_pooling_factor(encoder, factor: int):
    """The encoder compressing by `factor` (its single pooling layer's rate replaced)."""
    import dataclasses

    import arc_jax

    cfg = encoder.config
    if factor < 1 or len(cfg.compress_rates) != 1:
        raise ValueError(f"--pooling-factor {factor}: needs a factor >= 1 and an encoder with one pooling layer "
                         f"(this one has compress_rates {list(cfg.compress_rates)})")
    new = arc_jax.Encoder(dataclasses.replace(cfg, compress_rates=(-factor,)), encoder.params, encoder.dtype)
    new.path = encoder.path
    return new
