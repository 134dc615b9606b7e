"""`arc-jax generate`: answer a prompt with compressed context files. The model options and the
pipeline they load are shared with `arc-jax eval`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", required=True, help="encoder checkpoint (any layout arc_jax reads)")
    p.add_argument("--decoder", required=True, help="decoder checkpoint (any layout arc_jax reads)")
    p.add_argument("--decoder-index", type=int, default=0, help="the encoder head of this decoder (default 0)")
    p.add_argument("--encoder-tokenizer", help="tokenizer file or folder (default: in the encoder folder)")
    p.add_argument("--decoder-tokenizer", help="tokenizer file or folder (default: in the decoder folder)")
    p.add_argument("--dtype", choices=("keep", "float32", "bfloat16"), default="keep",
                   help="compute dtype (default: the checkpoints')")


def load_pipeline(args: argparse.Namespace):
    """The ARCPipeline of the model options `add_model_arguments` declares."""
    import arc_jax

    dtype = None if args.dtype == "keep" else args.dtype
    return arc_jax.ARCPipeline(arc_jax.load_encoder(args.encoder, dtype=dtype),
                               arc_jax.load_decoder(args.decoder, dtype=dtype), args.decoder_index,
                               args.encoder_tokenizer, args.decoder_tokenizer)


def open_store(path: str, pipe):
    """The compressed store at `path` for this pipeline: refused (one line) unless the pipeline's
    encoder, in its dtype, wrote it for the pipeline's decoder head."""
    import arc_jax
    from arc_jax.errors import DataError

    store = arc_jax.CompressedStore(path, encoder=pipe.encoder)
    if store.decoder_index != pipe.decoder_index:
        raise DataError(f"{path} holds vectors for decoder head {store.decoder_index}, not for --decoder-index "
                        f"{pipe.decoder_index}")
    return store


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="answer a prompt with compressed context files",
                              description="Compress each --context file with the encoder (or read records --id "
                                          "of a --store that `arc-jax index` wrote), place the compressed "
                                          "blocks before the prompt (BOS, block 1, newline, block 2, newline, ..., "
                                          "prompt text) and print the decoder's answer: greedy at temperature 0, "
                                          "else top-p sampling; it stops at the decoder tokenizer's EOS or after "
                                          "--max-new-tokens tokens. Tokenizers default to the tokenizer file in "
                                          "each checkpoint folder.")
    add_model_arguments(p)
    p.add_argument("--context", nargs="*", default=[], metavar="FILE", help="text files to compress, in order")
    p.add_argument("--store", help="a compressed store (arc-jax index) to read --id records from")
    p.add_argument("--id", nargs="+", action="extend", default=[], metavar="ID",
                   help="records of --store, in order, placed before the --context files")
    p.add_argument("--prompt", required=True,
                   help="the text after the contexts (in bash, $'Question: ...\\nAnswer:' holds a newline)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.8, help="nucleus kept when sampling (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace):
    from arc_jax.errors import DataError

    texts = []
    for path in args.context:
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read context file ({getattr(e, 'strerror', None) or e})") from None
    if bool(args.store) != bool(args.id):
        raise DataError("--store and --id go together: the store to read and the ids of its records")
    try:
        pipe = load_pipeline(args)
        blocks = []
        if args.store:
            store = open_store(args.store, pipe)
            blocks = store.read([store.index_of(record_id) for record_id in args.id])
        # Each stored record's block and each context's then a newline, in the order given, then the prompt.
        prompt = [piece for block in blocks + pipe.compress(texts) for piece in (block, "\n")] + [args.prompt]
        answer = pipe.generate([prompt], args.max_new_tokens, args.temperature, args.top_p, args.seed)[0]
    except ValueError as e:  # inputs the models cannot take (empty context, wrong decoder index, ...)
        raise DataError(str(e)) from None
    print(answer)
