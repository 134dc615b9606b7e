"""`arc-jax data check`: run a training config's input pipeline and report what it produced."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="input pipeline tools",
                                 description="Input pipeline tools. `arc-jax data check --config CONFIG` runs the "
                                             "config's pipeline for some batches and reports samples per source, "
                                             "bad records (file:line, reason), token counts, packing efficiency "
                                             "and tokens/s.")
    data.set_defaults(config_overrides=True)  # --config.a.b=value
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("check", help="run the input pipeline of a config and report",
                            description="Run the input pipeline of a training config for --batches batches and "
                                        "report what it produced. Override config fields with --config.a.b=value "
                                        "(e.g. --config.data.sources=a.jsonl:2,b.jsonl:1).")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--batches", type=int, default=20, help="batches to draw (default 20)")
    p.set_defaults(func=check)


def check(args: argparse.Namespace):
    from arc_jax.config_loading import load_config
    from arc_jax.data.check import data_check

    data_check(load_config(args.config, args.overrides), args.batches)
