"""Typed fields of the JSON configs checkpoints carry (params.json, config.json).

Every failure is one ConversionError naming the file, the section and the field: a missing field,
a wrong type, malformed JSON. Numbers written as strings ("1e-05") are accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from arc_jax.convert.errors import ConversionError
from arc_jax.model.config import BackboneConfig, llama_hidden_dim

_REQUIRED = object()


def load_json(path: Path) -> dict:
    """A JSON object from `path`; every failure is one ConversionError naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConversionError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read ({e})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def json_mentions(path: Path, key: str) -> bool:
    """Whether the JSON file at `path` has top-level `key`; a malformed file that names it counts,
    so that reading it reports the malformation instead of "unknown format"."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return f'"{key}"' in text
    return isinstance(value, dict) and key in value


def as_int(v) -> int:
    if isinstance(v, bool):
        raise TypeError
    if isinstance(v, str):
        v = float(v) if any(c in v for c in ".eE") else int(v)
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError
        v = int(v)
    if not isinstance(v, int):
        raise TypeError
    return v


def _as_float(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError
    return float(v)


def _as_bool(v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise TypeError


def _as_str(v) -> str:
    if not isinstance(v, str):
        raise TypeError
    return v


_KINDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "int": (as_int, "an integer"), "float": (_as_float, "a number"), "bool": (_as_bool, "true or false"),
    "str": (_as_str, "a string"),
}


def _label(where: str, name: str) -> str:
    return f"{where}{name}" if where.endswith(": ") else f"{where}.{name}"  # "file: " is the top level


def field(d: dict, name: str, kind: str, where: str, default=_REQUIRED):
    """d[name] converted to `kind` ("1e-05" is a float); `where` names the file and section."""
    label = _label(where, name)
    if d.get(name) is None:
        if default is _REQUIRED:
            raise ConversionError(f"{label}: missing")
        return default
    convert, described = _KINDS[kind]
    try:
        return convert(d[name])
    except (TypeError, ValueError):
        raise ConversionError(f"{label} = {d[name]!r} is not {described}") from None


def section(d: dict, name: str, where: str, required: bool = True) -> dict:
    value = d.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ConversionError(f"{where}: {name} {'missing' if value is None else 'is not a JSON object'}")
    return value


def backbone_from_args(args: dict, n_truncated_layers: int, where: str, vocab_size: int | None = None
                       ) -> BackboneConfig:
    """The encoder's backbone from the full model's arguments (reference model_args or a Meta
    params.json): n_layers becomes the layers that remain after truncation. `vocab_size` is the
    embedding table's row count, used where the arguments leave it out (Meta writes -1)."""
    dim = field(args, "dim", "int", where)
    n_layers = field(args, "n_layers", "int", where)
    n_heads = field(args, "n_heads", "int", where)
    if "hidden_dim" in args:
        hidden = field(args, "hidden_dim", "int", where)
    else:  # Meta Llama params.json leave the feed-forward width implicit
        multiplier = field(args, "ffn_dim_multiplier", "float", where, None)
        hidden = llama_hidden_dim(dim, field(args, "multiple_of", "int", where, 256), multiplier)
    vocab = field(args, "vocab_size", "int", where, -1)
    if vocab <= 0:
        if vocab_size is None:
            raise ConversionError(f"{_label(where, 'vocab_size')}: missing")
        vocab = vocab_size
    if n_layers - n_truncated_layers < 1:
        raise ConversionError(f"{_label(where, 'n_layers')} = {n_layers} with n_truncated_layers = "
                              f"{n_truncated_layers}: no encoder layer is left")
    try:
        return BackboneConfig(
            dim=dim, n_layers=n_layers - n_truncated_layers, n_heads=n_heads,
            n_kv_heads=field(args, "n_kv_heads", "int", where, n_heads),
            head_dim=field(args, "head_dim", "int", where, dim // n_heads if n_heads else 0),
            hidden_dim=hidden, vocab_size=vocab,
            rope_theta=field(args, "rope_theta", "float", where, 10000.0),  # Meta Llama's default
            norm_eps=field(args, "norm_eps", "float", where, 1e-5))
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None
