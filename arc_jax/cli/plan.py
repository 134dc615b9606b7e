"""`arc-jax plan`: compile a config's train step for a TPU topology without the hardware."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="compile a config's train step for a TPU topology, without the TPU",
                              description="Compile the trainer's step of a config for a TPU topology (libtpu's "
                                          "description, no hardware; needs the tpu extra) with abstract weights "
                                          "and batch, and report memory per device against HBM (fits / does not "
                                          "fit), collectives, FLOPs and a lower bound on step time. Exit status 2 "
                                          "when it does not fit. Override config fields with --config.a.b=value.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--topology", required=True,
                   help="v5p-N or v4-N (N TensorCores: v5p-8 = 4 chips), v5e-N or v6e-N (N chips)")
    p.add_argument("--num-slices", type=int, default=1, help="slices of that topology (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=run, config_overrides=True)


def run(args: argparse.Namespace):
    from arc_jax.config_loading import load_config
    from arc_jax.tools.plan import main_plan

    return main_plan(load_config(args.config, args.overrides), args.topology, args.num_slices, args.json)
