"""`arc-jax data check`: run a training config's input pipeline and report what it produced.
`arc-jax data show`: print its first samples as the decoder reads them.
`arc-jax data prepare`: write the reference's jsonl files of a Hugging Face dataset."""

from __future__ import annotations

import argparse
import itertools

from arc_jax.cli.bench import positive_int


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="input pipeline tools",
                                 description="Input pipeline tools. `arc-jax data check --config CONFIG` runs the "
                                             "config's pipeline for some batches and reports samples per source, "
                                             "bad records (file:line, reason), token counts, packing efficiency "
                                             "and tokens/s. `arc-jax data show --config CONFIG` prints its first "
                                             "samples as the decoder reads them. `arc-jax data prepare NAME --out "
                                             "DIR` writes the reference's jsonl files of a fine-tuning or "
                                             "evaluation set from the Hugging Face hub (or --from a local copy).")
    data.set_defaults(config_overrides=True)  # --config.a.b=value
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("check", help="run the input pipeline of a config and report",
                            description="Run the input pipeline of a training config for --batches batches and "
                                        "report what it produced. Override config fields with --config.a.b=value "
                                        "(e.g. --config.data.sources=a.jsonl:2,b.jsonl:1).")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--batches", type=int, default=20, help="batches to draw (default 20)")
    p.add_argument("--devices", type=positive_int, default=1,
                   help="the devices (data x fsdp) the run splits the rows over: proposed row counts are multiples "
                        "of it (default 1; `arc-jax demo` runs on 2 CPU devices)")
    p.set_defaults(func=check)
    _add_show_parser(data_sub)
    _add_prepare_parser(data_sub)


def _add_show_parser(data_sub) -> None:
    p = data_sub.add_parser(
        "show", help="print the first samples of a config's pipeline as the decoder reads them",
        description="Print the first --n samples of a training config's input pipeline as the decoder reads "
                    "them, read back from the packed batches (in the order a one-process run draws them: step "
                    "s reads decoder drawn_decoder(seed, s), grad_accum batches a step). Per sample: its task "
                    "and decoder, then its pieces in order: text as decoded, each compressed block as "
                    "[C xK: \"start of the text the encoder read\"], the special vector <Rec>/<Cont>. Loss: "
                    "«text» marks the tokens the decoder is trained to produce (each the target, with loss, "
                    "of the text slot before it or of a slot between the two); the sample's last target "
                    "(e.g. <eos>) is no input token and is printed after it. <bos>, "
                    "<eos>, <pad> name the control tokens. --json: one object a line, "
                    "{\"task\": ..., \"decoder\": int, \"pieces\": [{\"text\": str, \"loss\": bool} | "
                    "{\"compressed\": int, \"text\": str} | {\"special\": \"rec\"|\"cont\"}, ...]}; "
                    "the pieces in order are the decoder's whole input.")
    p.add_argument("--config", required=True, help="config file (a Python file with get_config())")
    p.add_argument("--n", type=int, default=4, help="samples to show (default 4)")
    p.add_argument("--json", action="store_true", help="one JSON object per sample per line")
    p.set_defaults(func=show)


def _add_prepare_parser(data_sub) -> None:
    from arc_jax.data.prepare import SOURCES, HubSource

    lines = []
    for s in SOURCES.values():
        where = f"{s.hub_id} ({s.config or 'default'}, {s.split})" if isinstance(s, HubSource) else \
            f"{s.hub_id} ({s.hub_file})"
        lines.append(f"{s.name}: {where}")
    p = data_sub.add_parser(
        "prepare", help="write the reference's jsonl files of a fine-tuning or evaluation set",
        description="Write dataset NAME in the reference's jsonl format (the fields, paths and file names "
                    "its load_datasets.ipynb and evaluation use) under --out: raw/, w_retrieved/, flores/ and "
                    "long_context/ for the evaluation sets, the released files flat for arc_finetuning. "
                    "Downloads through the `datasets` library (pip install 'arc-jax[prepare]'), or reads "
                    "--from, a local copy of the split in the hub's own layout (parquet, jsonl or json files, "
                    "a folder of them, or the hub's zip/tar archive). NQ and TriviaQA take retrieved passages "
                    "from a 'passages' list in each input record (see README); without them only raw/ is "
                    "written (closed book). Writes each file whole or not at all; prints records written per "
                    "file and skipped records (file:line or row, reason). Datasets: " + "; ".join(lines) + ".")
    p.add_argument("name", metavar="NAME", help=f"the dataset: {', '.join(SOURCES)}")
    p.add_argument("--out", required=True, help="output folder (the reference's DATA_PATH)")
    p.add_argument("--from", dest="from_path", metavar="PATH",
                   help="a local copy of the split in the hub's layout, instead of downloading")
    p.add_argument("--split", help="another split than the reference's (its files get the split in their name)")
    p.add_argument("--max-records", type=int, metavar="N", help="stop after N input records (per file for "
                                                                 "arc_finetuning)")
    p.set_defaults(func=prepare, config_overrides=False)


def check(args: argparse.Namespace):
    from arc_jax.config_loading import load_config
    from arc_jax.data.check import data_check

    data_check(load_config(args.config, args.overrides), args.batches, args.devices)


def show(args: argparse.Namespace):
    from arc_jax.config_loading import load_config
    from arc_jax.data.show import data_show

    config = load_config(args.config, args.overrides)
    data_show(config, args.n, args.json, _training_order(config), config_name=args.config)


def prepare(args: argparse.Namespace):
    from arc_jax.data.prepare import prepare as prepare_data

    report = prepare_data(args.name, args.out, args.from_path, args.split, args.max_records)
    print("\n".join(report.lines()))


def _training_order(config):
    """The decoder of each batch in the order the trainer draws them: step 1, 2, ... reads decoder
    drawn_decoder(seed, step) for grad_accum batches."""
    from arc_jax.train.trainer import drawn_decoder

    n_decoders, accum = len(config.model.get("decoders") or [0]), config.get("grad_accum", 1)
    for step in itertools.count(1):
        yield from [drawn_decoder(config.seed, step, n_decoders)] * accum
