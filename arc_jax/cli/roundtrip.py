"""`arc-jax roundtrip`: tiny random models through every layout, checked bit for bit."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("roundtrip", help="self-check: tiny random models through every layout",
                              description="Generate a tiny random ARC encoder and decoder, write them in every "
                                          "layout arc_jax supports, read them back, and check the parameters are "
                                          "bit-identical and the models compute the same outputs. Needs no "
                                          "download.")
    p.add_argument("--workdir", default="arc_jax_runs/roundtrip", help="where the checkpoints are written")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    from arc_jax.tools.roundtrip import run_roundtrip

    ok = run_roundtrip(Path(args.workdir), seed=args.seed)
    return 0 if ok else 1
