"""`arc-jax index`: compress every text of a jsonl corpus once into a store on disk
(arc_jax/inference/store.py), for `generate --store`, `eval --store` and `arc_jax.CompressedStore`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("index", help="compress a jsonl corpus once into a compressed store on disk",
                              description="Tokenise the --field text of every record of --data with the encoder's "
                                          "tokenizer, compress it for decoder head --decoder-index and write the "
                                          "vectors (the encoder's dtype, bf16, or product-quantised codes), each "
                                          "record's id and line, and the encoder's identity (config and weights "
                                          "hash) to --out. A field holding a list is read as eval reads passages: "
                                          "its first --max-passages strings, each stripped, joined by newlines "
                                          "(strings are stripped too), so that a benchmark indexed with --field "
                                          "passages is what `arc-jax eval --store` compresses. Killed, the same "
                                          "command resumes. Bad records are skipped and listed with file:line.")
    p.add_argument("--encoder", required=True, help="encoder checkpoint (any layout arc_jax reads)")
    p.add_argument("--encoder-tokenizer", help="tokenizer file or folder (default: in the encoder folder)")
    p.add_argument("--data", required=True, metavar="FILE", help="jsonl corpus, one record a line")
    p.add_argument("--field", default="text", help="the record field to compress (default text)")
    p.add_argument("--max-passages", type=int, default=1,
                   help="a list field: how many of its strings make the text, as eval's --max-passages (default 1)")
    p.add_argument("--id-field", default="id",
                   help="record id field (default id); a record without one is named FILE:LINE")
    p.add_argument("--out", required=True, help="store folder (created; an unfinished one is resumed)")
    p.add_argument("--decoder-index", type=int, default=0, help="the encoder head of the decoder (default 0)")
    p.add_argument("--pq", metavar="M:BITS",
                   help="store product-quantised codes (M sub-vectors, 2**BITS centroids each; faiss: "
                        "pip install 'arc-jax[pq]') instead of the vectors")
    p.add_argument("--pq-train-vectors", type=int, default=1 << 16,
                   help="vectors of the first records the codebooks are trained on (default 65536)")
    p.add_argument("--dtype", choices=("keep", "float32", "bfloat16"), default="keep",
                   help="the encoder's compute dtype, as generate and eval take it (default: the checkpoint's); "
                        "a store is read only with an encoder in the same dtype")
    p.add_argument("--vector-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="stored vectors (default auto: the compute dtype, so stored vectors are exactly the online "
                        "ones; bfloat16 halves a float32 encoder's store)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per compress call (default 64)")
    p.set_defaults(func=run)


def read_corpus(path: str, field: str, max_passages: int, id_field: str, tokenizer, bad) -> tuple[list, list, list]:
    """(token ids, record ids, lines) of the usable records; the others go to `bad` (BadRecords)
    with their line and reason."""
    import numpy as np

    from arc_jax.data.sources import parse_record
    from arc_jax.errors import DataError
    from arc_jax.evaluation.harness import record_document

    try:
        raw_lines = Path(path).read_bytes().split(b"\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    texts, ids, lines, seen = [], [], [], set()
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        record, reason = parse_record(raw.rstrip(b"\r"), {}, max_record_bytes=len(raw))
        if reason is None:
            try:
                document = record_document(record, (field,), max_passages)
            except ValueError as e:
                reason = str(e)
        if reason is None:
            record_id = record.get(id_field, f"{Path(path).name}:{number}")
            if isinstance(record_id, bool) or not isinstance(record_id, (str, int)) or not str(record_id).strip() \
                    or "\n" in str(record_id) or "\r" in str(record_id):
                reason = f"field '{id_field}' must be a one-line string or an integer"
            elif str(record_id) in seen:
                reason = f"id {str(record_id)!r} already used by an earlier record"
        if reason is None:
            ids_ = tokenizer.encode(document)
            if not ids_:
                reason = f"field '{field}' is empty: nothing to compress"
        if reason is not None:
            bad.skip(path, number, reason)
            continue
        seen.add(str(record_id))
        texts.append(np.asarray(ids_, np.int32)), ids.append(str(record_id)), lines.append(number)
    return texts, ids, lines


def run(args: argparse.Namespace):
    import arc_jax
    from arc_jax.data.bad_records import BadRecords
    from arc_jax.errors import DataError
    from arc_jax.inference.generate import resolve_tokenizer
    from arc_jax.train import multihost

    multihost.initialize()  # several processes (SLURM, TPU pod, JAX_* variables): each writes its own units
    began = time.perf_counter()
    if args.max_passages < 1:
        raise DataError(f"--max-passages must be >= 1, got {args.max_passages}")
    try:
        encoder = arc_jax.load_encoder(args.encoder, dtype=None if args.dtype == "keep" else args.dtype)
        tokenizer = resolve_tokenizer(args.encoder_tokenizer, encoder.path, "encoder")
        bad = BadRecords()
        texts, ids, lines = read_corpus(args.data, args.field, args.max_passages, args.id_field, tokenizer, bad)
        if not texts:
            raise DataError(f"{args.data}: no usable record ({bad.summary()})")
        store = arc_jax.write_store(
            encoder, texts, args.out, record_ids=ids, lines=lines, decoder_index=args.decoder_index, pq=args.pq,
            vector_dtype=None if args.vector_dtype == "auto" else args.vector_dtype,
            batch_size=args.batch_size, pq_train_vectors=args.pq_train_vectors,
            source={"data": str(args.data), "field": args.field, "max_passages": args.max_passages,
                    "tokenizer": str(getattr(tokenizer, "path", ""))})
    except ValueError as e:  # bad options or inputs the encoder cannot take: one line
        raise DataError(str(e)) from None
    if bad.total:
        print(bad.summary())
    if store is None:
        print(f"index: this process's units of {args.out} written; other processes' remain")
        return
    print(f"indexed {len(store)} records of {args.data} ({bad.total} skipped) into {args.out}: "
          f"{store.meta['n_vectors']} vectors of {store.dim} ({store.storage}), {store.nbytes / 2 ** 20:.1f} MiB, "
          f"{store.bytes_per_vector} bytes per vector, {store.bytes_per_token:.1f} per token, "
          f"{time.perf_counter() - began:.1f} s")
