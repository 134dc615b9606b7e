"""Weight converters: every checkpoint layout arc_jax reads or writes, detected from the files;
layout.py renames Meta/Mistral tensor names to arc_jax parameter trees and back.

Decoders: "meta" (Meta/Mistral consolidated .pth or .safetensors + params.json), "hf" (Hugging Face
transformers safetensors + config.json), "olmo" (allenai's own OLMo model.safetensors, read only),
"arc_jax" (Orbax). Encoders: "released" (Hugging Face
ARC-Encoder model.safetensors + config.json), "reference" (reference training checkpoint),
"arc_jax". Each format module has `matches(path)`, `read(path) -> (config, params)` and
`write(config, params, folder)`; params are numpy pytrees in the arc_jax layout. Readers also take a
Hugging Face hub id in place of a folder (hub.py).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from arc_jax.convert.atomic import atomic_output_dir
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.hub import local_checkpoint

DECODER_FORMATS = ("arc_jax", "olmo", "hf", "meta")
# Formats arc_jax reads but does not write.
READ_ONLY_FORMATS = ("olmo",)
ENCODER_FORMATS = ("arc_jax", "released", "reference")


def _module(name: str):
    return importlib.import_module(f"arc_jax.convert.{'arc_jax_format' if name == 'arc_jax' else name}")


def detect_format(path: str | os.PathLike, kind: str) -> str:
    """The layout of the folder at `path` ("encoder" or "decoder" kind), judged from its files."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise ConversionError(f"{path}: expected a checkpoint folder, found a file")
    names = DECODER_FORMATS if kind == "decoder" else ENCODER_FORMATS
    from arc_jax.convert import arc_jax_format

    if arc_jax_format.matches(path):
        found = arc_jax_format.read_kind(path)
        if found not in (kind, "workdir"):
            raise ConversionError(f"{path}: this is an arc_jax {found}, not a {kind}")
        return "arc_jax"
    for name in names[1:]:
        if _module(name).matches(path):
            return name
    other = ENCODER_FORMATS if kind == "decoder" else DECODER_FORMATS
    for name in other:
        if name != "arc_jax" and _module(name).matches(path):
            raise ConversionError(f"{path}: this is a {name} {'encoder' if kind == 'decoder' else 'decoder'}, "
                                  f"not a {kind}")
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "empty folder"
    raise ConversionError(f"{path}: unknown {kind} format (found: {listing}); expected one of {', '.join(names)}")


def _read(path, kind: str):
    path = local_checkpoint(path)
    fmt = detect_format(path, kind)
    if fmt == "arc_jax":
        return _module(fmt).read(Path(path), kind)
    return _module(fmt).read(Path(path))


def read_decoder(path: str | os.PathLike):
    """(BackboneConfig, params) of the decoder checkpoint at `path`, whatever its layout."""
    return _read(path, "decoder")


def read_decoder_config(path: str | os.PathLike):
    """The BackboneConfig of the decoder checkpoint at `path` from its config file alone, no weights
    read (a Meta params.json must then state its vocab_size)."""
    from arc_jax.convert.config_fields import load_json

    path = local_checkpoint(path)
    fmt = detect_format(path, "decoder")
    if fmt == "arc_jax":
        return _module(fmt).read_config(path, "decoder")
    if fmt == "hf":
        return _module(fmt).config_from_hf(load_json(path / "config.json"), f"{path / 'config.json'}: ")
    if fmt == "olmo":
        from arc_jax.convert import olmo
        from arc_jax.convert.safetensors_io import SafetensorsFile

        return olmo.read_config(path, SafetensorsFile(path / olmo.WEIGHTS))
    return _module(fmt).config_from_params(load_json(path / "params.json"), f"{path / 'params.json'}: ", None)


def read_encoder(path: str | os.PathLike):
    """(EncoderConfig, params) of the encoder checkpoint at `path`, whatever its layout."""
    return _read(path, "encoder")


def _write(cfg, params, out, format: str, formats: tuple[str, ...], kind: str, overwrite: bool, options):
    formats = tuple(f for f in formats if f not in READ_ONLY_FORMATS)
    if format not in formats:
        raise ConversionError(f"unknown {kind} output format {format!r}; choose from {', '.join(formats)}")
    with atomic_output_dir(out, overwrite) as tmp:
        _module(format).write(cfg, params, tmp, **options)
    return Path(out)


def write_decoder(cfg, params, out: str | os.PathLike, format: str, overwrite: bool = False, **options) -> Path:
    """Write a decoder in `format` ("hf", "meta", "arc_jax"); nothing is left behind on failure.
    `options` go to the format's writer (e.g. meta: shards, container)."""
    return _write(cfg, params, out, format, DECODER_FORMATS, "decoder", overwrite, options)


def write_encoder(cfg, params, out: str | os.PathLike, format: str, overwrite: bool = False, **options) -> Path:
    """Write an encoder in `format` ("released", "reference", "arc_jax"); all or nothing."""
    return _write(cfg, params, out, format, ENCODER_FORMATS, "encoder", overwrite, options)


__all__ = ["ConversionError", "detect_format", "local_checkpoint", "read_decoder", "read_decoder_config", "read_encoder", "write_decoder", "write_encoder"]
