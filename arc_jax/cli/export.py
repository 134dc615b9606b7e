"""`arc-jax export`: any supported layout -> released / reference / hf / meta (or arc_jax)."""

from __future__ import annotations

import argparse

from arc_jax.cli.convert import add_layout_options, convert_or_export


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="any supported layout -> released / reference / hf / meta",
                              description="Write an encoder as 'released' (Hugging Face ARC-Encoder: "
                                          "model.safetensors + config.json) or 'reference' (reference training "
                                          "checkpoint), or a decoder as 'hf' (transformers) or 'meta' "
                                          "(consolidated.00.pth + params.json). The source may be in any supported "
                                          "layout. Nothing is written on failure.")
    p.add_argument("src", help="source folder (an arc_jax checkpoint or any supported layout)")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", required=True, choices=("released", "reference", "hf", "meta", "arc_jax"))
    add_layout_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    return convert_or_export(args, None)
