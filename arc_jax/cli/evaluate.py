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
                                          "length). Greedy decoding; the answer is the first generated line. "
                                          "Writes results.json, results.md and predictions/ to --out and prints "
                                          "the table.")
    add_model_arguments(p)
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    from arc_jax.errors import DataError
    from arc_jax.evaluation.harness import evaluate, markdown_table, parse_benchmark

    try:
        benchmarks = [parse_benchmark(spec) for spec in args.data]
        pipe = load_pipeline(args)
        results = evaluate(pipe, benchmarks, args.modes.split(","), args.out, shots=args.shots,
                           max_examples=args.max_examples, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, seed=args.seed, max_passages=args.max_passages)
    except ValueError as e:  # bad options or inputs the models cannot take: one line, no traceback
        raise DataError(str(e)) from None
    out = Path(args.out)
    print(markdown_table(results), end="")
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'predictions'}/")
