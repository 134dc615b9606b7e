"""`arc-jax convert`: any supported layout -> arc_jax checkpoint, or a fresh encoder from a decoder backbone.
The reading, casting and writing it shares with `arc-jax export` live here too."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_layout_options(p: argparse.ArgumentParser):
    p.add_argument("--kind", choices=("auto", "encoder", "decoder"), default="auto",
                   help="what the source holds (default: detected from its files)")
    p.add_argument("--dtype", choices=("keep", "float32", "bfloat16"), default="keep",
                   help="cast the parameters (default: keep the source's dtype)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("convert", help="any supported layout -> arc_jax checkpoint",
                              description="Read an encoder (released Hugging Face ARC-Encoder, reference training "
                                          "checkpoint) or a decoder (Meta/Mistral consolidated, Hugging Face "
                                          "transformers) and write an arc_jax (Orbax) checkpoint. The layout is "
                                          "detected from the files. Nothing is written on failure.")
    p.add_argument("src", help="source folder, or a Hugging Face hub id (e.g. kyutai/ARC8_Encoder_Llama)")
    p.add_argument("out", help="output folder (arc_jax checkpoint)")
    add_layout_options(p)
    fresh = p.add_argument_group("fresh encoder (--fresh-encoder: SRC is a decoder backbone, e.g. Llama 3.2 3B)")
    fresh.add_argument("--fresh-encoder", action="store_true",
                       help="build a new encoder to pretrain: truncated backbone, <Rec>/<Cont> = ones, "
                            "projectors initialised like torch.nn.Linear")
    fresh.add_argument("--n-truncated-layers", type=int, default=2, help="last layers removed (default 2)")
    fresh.add_argument("--compress-rates", type=int, nargs="*", default=[-8],
                       help="one entry per pooling layer, -k pools by k (default -8)")
    fresh.add_argument("--pool-type", choices=("mean", "last"), default="mean")
    fresh.add_argument("--causal", action="store_true", help="causal encoder attention (an ablation)")
    fresh.add_argument("--memory-tokens", type=int, default=0,
                       help="ICAE-like baseline: n memory tokens per text (give --compress-rates no value)")
    fresh.add_argument("--decoder-dims", type=int, nargs="+", default=[4096],
                       help="width of each decoder the encoder will serve (one head each; default 4096)")
    fresh.add_argument("--projector-hidden", type=int, default=2048, help="projector bottleneck (default 2048)")
    fresh.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def progress_bar(description: str):
    from arc_jax.convert.progress import progress_bar as bar

    return bar(description)


def read_any(src: Path, kind: str):
    """(kind, config, params) from any layout; kind "auto" tries encoder layouts first."""
    from arc_jax import convert
    from arc_jax.train.checkpoint import read_checkpoint

    src = convert.local_checkpoint(src)  # a Hugging Face hub id: its cached snapshot
    if kind != "auto":
        reader = convert.read_encoder if kind == "encoder" else convert.read_decoder
        return (kind, *read_checkpoint(src, reader))  # a trainer workdir: its newest intact step
    try:
        convert.detect_format(src, "encoder")
        return ("encoder", *read_checkpoint(src, convert.read_encoder))
    except convert.ConversionError as encoder_error:
        try:
            convert.detect_format(src, "decoder")
        except convert.ConversionError:
            raise encoder_error from None
        return ("decoder", *convert.read_decoder(src))


def cast(params, dtype: str):
    if dtype == "keep":
        return params
    import jax
    import ml_dtypes
    import numpy as np

    target = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    return jax.tree.map(lambda x: np.asarray(x).astype(target), params)


def convert_or_export(args: argparse.Namespace, out_format: str | None):
    """Read args.src in any layout and write it as `out_format` (None: args.format)."""
    import jax

    from arc_jax import convert

    start = time.perf_counter()
    with progress_bar(f"reading {args.src}"):
        kind, cfg, params = read_any(Path(args.src), args.kind)
    params = cast(params, args.dtype)
    fmt = out_format or args.format
    writer = convert.write_encoder if kind == "encoder" else convert.write_decoder
    with progress_bar(f"writing {fmt} to {args.out}"):
        out = writer(cfg, params, args.out, fmt, overwrite=args.overwrite)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"wrote {kind} ({n / 1e6:.2f}M parameters) as {fmt} to {out} in {time.perf_counter() - start:.1f}s")


def run(args: argparse.Namespace):
    if not args.fresh_encoder:
        return convert_or_export(args, "arc_jax")
    from arc_jax import convert
    from arc_jax.convert.fresh import fresh_encoder

    start = time.perf_counter()
    with progress_bar(f"reading {args.src}"):
        cfg, params = fresh_encoder(
            args.src, n_truncated_layers=args.n_truncated_layers, compress_rates=args.compress_rates,
            pool_type=args.pool_type, causal=args.causal, n_memory_tokens=args.memory_tokens,
            out_dims=args.decoder_dims, hidden_dim=args.projector_hidden, seed=args.seed)
    params = cast(params, args.dtype)
    out = convert.write_encoder(cfg, params, args.out, "arc_jax", overwrite=args.overwrite)
    print(f"wrote a fresh encoder ({cfg.backbone.n_layers} layers, pooling {list(cfg.compress_rates)}, "
          f"{cfg.n_decoders} decoder head(s)) to {out} in {time.perf_counter() - start:.1f}s")
