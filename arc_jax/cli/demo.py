"""`arc-jax demo`: the paper in miniature on CPU."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the paper in miniature on CPU: train a decoder and ARC encoders, "
                                           "evaluate",
                              description="Generate a synthetic corpus, train a small decoder LM from scratch, "
                                          "pretrain and fine-tune ARC encoders against it, and evaluate "
                                          "closed-book, open-book and compressed QA on held-out people (on 2 CPU "
                                          "cores: ~6-8 min on an Intel Xeon with AVX-512, ~9.5-11 on an AMD EPYC).")
    p.add_argument("--workdir", default="arc_jax_demo", help="where everything is written (default arc_jax_demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --workdir")
    p.add_argument("--smoke", action="store_true", help="a few steps of tiny models in every stage (seconds)")
    p.add_argument("--pooling-factors", type=int, nargs="+", default=[4],
                   help="ARC encoders to train (default 4; `4 8` adds ARC8, ~4 more minutes)")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate at most this many held-out questions")
    p.add_argument("--shots", type=int, default=None,
                   help="in-context examples in the evaluation prompts (default 0, as the encoder is fine-tuned)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds every stage: corpus, decoder LM, encoder init and training data order (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    from arc_jax.demo.run import SHOTS, run_demo

    if args.shots is None:
        args.shots = SHOTS
    run_demo(args.workdir, resume=args.resume, smoke=args.smoke, pooling_factors=tuple(args.pooling_factors),
             max_examples=args.max_examples, shots=args.shots, seed=args.seed)
