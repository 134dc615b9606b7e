"""The `arc-jax` command line. Each subcommand is a module here that declares its arguments next to
its handler (`add_parser(subparsers)`); this module only assembles them, applies --config.a.b=value
overrides where a subcommand takes a config, and prints expected failures as one line."""

from __future__ import annotations

import argparse
import sys

from arc_jax.cli import bench, convert, data, demo, evaluate, export, generate, plan, roundtrip, train

_DESCRIPTION = """arc_jax: train, convert and run ARC-Encoder context compressors in JAX.

Subcommands:
  demo       the paper in miniature on CPU (~13 min): synthetic corpus, decoder LM trained from
             scratch, ARC4 encoder (ARC8 optional) pretrained and fine-tuned, closed/open/compressed QA
  convert    read an encoder or decoder in any supported layout, write an arc_jax checkpoint
             (or build a fresh encoder from a Llama backbone to start pretraining)
  export     write an encoder or decoder in a released / reference / Hugging Face / Meta layout
  roundtrip  generate a tiny random encoder and decoder, write and read every layout, check it
  data       check a training config's input pipeline (data check --config CONFIG), or show its
             first samples as the decoder reads them (data show --config CONFIG [--n N] [--json]);
             write the reference's jsonl of a fine-tuning or evaluation set from the Hugging Face hub
             (data prepare NAME --out DIR [--from PATH]; needs the prepare extra to download)
  train      train an encoder: train --config CONFIG --workdir DIR [--config.a.b=value ...]
  plan       compile a config's train step for a TPU topology or GPU node without the hardware: fits?,
             collectives, step time bound (plan --config CONFIG --topology v5p-64 | 8xh100; needs the
             tpu or gpu-compile extra); plan --generate for the inference programs
  generate   answer a prompt with compressed context files (KV-cached decoding)
  eval       score closed-book, open-book and compressed contexts on jsonl benchmarks
  bench      train: step time, tokens/s and MFU of a config's train step;
             inference: time and FLOPs of compressed vs full-context answering
"""

# In the order `arc-jax --help` lists them.
SUBCOMMANDS = (convert, export, roundtrip, demo, data, train, plan, generate, evaluate, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arc-jax", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # Left-over arguments are config overrides, and only subcommands that load a config take them.
    args.overrides = [u for u in unknown if u.startswith("--config.")]
    takes_overrides = getattr(args, "config_overrides", False)
    if len(args.overrides) != len(unknown) or (args.overrides and not takes_overrides):
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
