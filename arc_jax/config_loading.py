"""Config files as data: a Python file whose get_config() returns an ml_collections ConfigDict,
overridden from the command line with --config.a.b=value (big_vision / MaxText style)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import traceback
import typing
from pathlib import Path
from typing import Sequence

import ml_collections

from arc_jax.errors import ConfigError  # noqa: F401  (imported from here by the trainer and tests)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    spec = importlib.util.spec_from_file_location(f"arc_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config()")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 (a config file is user code: any error is the user's to fix)
        raise ConfigError(_config_file_failure(path, e)) from None
    for override in overrides:
        apply_override(config, override, path)
    return config


def _config_file_failure(path: Path, e: Exception) -> str:
    """"<file>:<line>: <error>" of a config file that does not run, at its deepest line in the file."""
    if isinstance(e, SyntaxError):
        return f"{path}:{e.lineno}: invalid Python ({e.msg})"
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    where = f"{path}:{lines[-1]}" if lines else str(path)
    return f"{where}: the config file fails to run ({type(e).__name__}: {e})"


def apply_override(config: ml_collections.ConfigDict, override: str, path: Path | str = "config") -> None:
    """Apply one "--config.a.b=value" (the value parsed as a Python literal when it is one)."""
    if not override.startswith("--config.") or "=" not in override:
        raise ConfigError(f"override {override!r}: expected --config.field=value")
    dotted, raw = override[len("--config."):].split("=", 1)
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        node = _child(node, name, path, dotted)
    if isinstance(node, list):
        index = _index(node, leaf, path, dotted)
        node[index] = _convert(node[index], raw, f"config.{dotted}")
        return
    if leaf not in node:
        raise ConfigError(f"{path}: no field config.{dotted}")
    node[leaf] = _convert(node[leaf], raw, f"config.{dotted}")


def _index(node: list, name: str, path, dotted: str) -> int:
    if not name.isdigit() or int(name) >= len(node):
        raise ConfigError(f"{path}: no field config.{dotted} ({name!r} is not an index of a list of {len(node)})")
    return int(name)


def _child(node, name: str, path, dotted: str):
    """node.name, or node[int(name)] for lists (--config.model.decoders.0.path=...)."""
    if isinstance(node, (list, tuple)):
        return node[_index(node, name, path, dotted)]
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise ConfigError(f"{path}: no field config.{dotted} ({name!r} is not in the config)")
    return node[name]


def _convert(current, raw: str, name: str):
    """`raw` as the type of the field it replaces; a mismatch is an error, never a silent cast."""
    if isinstance(current, str):
        return raw
    value = _literal(raw)
    if isinstance(current, bool):
        value = {"true": True, "false": False}.get(raw.lower(), value)
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(current)(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{name}={raw!r}: expected {type(current).__name__}")
    return value


def _literal(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def to_plain(value):
    """A config (or any part of one) as plain dicts and lists, ready for JSON (ConfigDict.to_dict
    leaves ConfigDicts inside lists, e.g. config.model.decoders, as they are)."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def typed(value, expected, name: str):
    """`value` if it is of the `expected` type(s) (an int where a float is expected becomes one; a
    bool is not an int here), else ConfigError naming the field."""
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{name}={value!r}: expected {_type_name(expected)}, got bool")
    if float in allowed and isinstance(value, int):
        return float(value)
    if not isinstance(value, allowed):
        raise ConfigError(f"{name}={value!r}: expected {_type_name(expected)}, got {type(value).__name__}")
    return value


def _type_name(expected) -> str:
    if isinstance(expected, tuple):
        return " or ".join("None" if t is type(None) else t.__name__ for t in expected)
    return expected.__name__


def checked_fields(cls, fields, name: str) -> dict:
    """`fields` (a dict or ConfigDict) as plain values of dataclass `cls`'s field types: unknown,
    missing and wrong-typed fields are reported by name. A dataclass-typed field stays a dict for
    its own check."""
    fields = to_plain(fields)
    types = typing.get_type_hints(cls)
    if not isinstance(fields, dict):
        raise ConfigError(f"{name}={fields!r}: expected a dict of {sorted(types)}")
    unknown = sorted(set(fields) - set(types))
    if unknown:
        raise ConfigError(f"{name} has unknown field(s) {unknown}; known: {sorted(types)}")
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and field.name not in fields:
            raise ConfigError(f"{name}.{field.name} is required")
    return {key: typed(value, dict if dataclasses.is_dataclass(types[key]) else types[key], f"{name}.{key}")
            for key, value in fields.items()}
