"""The `arc-jax` command line. Each subcommand is a module here that declares its arguments next to
its handler (`add_parser(subparsers)`); this module only assembles them, applies --config.a.b=value
overrides where a subcommand takes a config, and prints expected failures as one line.

Expected failures: arc_jax's own errors (arc_jax.errors), the operating system refusing a file
(missing, unreadable, read-only, full disk: OSError) and Ctrl-C. Each ends in one line on stderr
and a non-zero exit (2; 130 for Ctrl-C); anything else is a bug and keeps its traceback. `--debug`
(anywhere on the line) or ARC_JAX_DEBUG=1 shows the traceback of expected failures too, for bug
reports."""

from __future__ import annotations

import argparse
import os
import sys

from arc_jax.cli import bench, convert, data, demo, evaluate, export, generate, index, plan, roundtrip, train

_DESCRIPTION = """arc_jax: train, convert and run ARC-Encoder context compressors in JAX.

Subcommands:
  demo       the paper in miniature on CPU (8-14 min): synthetic corpus, decoder LM trained from
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
  index      compress a jsonl corpus once into a store on disk (index --encoder E --data F --out STORE
             [--pq M:BITS]); generate and eval read it with --store
  generate   answer a prompt with compressed context files (KV-cached decoding)
  eval       score closed-book, open-book and compressed contexts on jsonl benchmarks
  bench      train: step time, tokens/s and MFU of a config's train step;
             inference: time and FLOPs of compressed vs full-context answering;
             serve: time to first token, decode tokens/s and memory of full text, online
             compression and the store, at several batch sizes
"""

# In the order `arc-jax --help` lists them.
SUBCOMMANDS = (convert, export, roundtrip, demo, data, train, plan, index, generate, evaluate, bench)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line too, pointing at --help (subcommands' parsers are of this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arc-jax", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of expected failures too (or set ARC_JAX_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    from arc_jax import errors

    if args.debug or "--debug" in unknown:  # also taken after the subcommand
        os.environ[errors.DEBUG_VARIABLE] = "1"  # library code shows what it would otherwise quieten
    unknown = [u for u in unknown if u != "--debug"]
    # Left-over arguments are config overrides, and only subcommands that load a config take them.
    args.overrides = [u for u in unknown if u.startswith("--config.")]
    takes_overrides = getattr(args, "config_overrides", False)
    if len(args.overrides) != len(unknown) or (args.overrides and not takes_overrides):
        prog = f"arc-jax {args.command}" if args.command else "arc-jax"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see {prog} --help)\n")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except (errors.ArcJaxError, OSError, KeyboardInterrupt) as e:  # an expected failure: one line, no traceback
        if errors.debugging():
            raise
        print(f"arc-jax {args.command}: {expected_failure(e)}", file=sys.stderr, flush=True)
        return 130 if isinstance(e, KeyboardInterrupt) else 2


def expected_failure(e: BaseException) -> str:
    """The line an expected failure prints after "arc-jax <command>: "."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(e, OSError) and e.strerror:  # e.g. "error: /w/decoder_0/arc_jax.json: No space left on device"
        return f"error: {e.filename + ': ' if e.filename else ''}{e.strerror}"
    return f"error: {' '.join(str(e).splitlines())}"
