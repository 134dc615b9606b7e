"""The data section of a training config (`config.data`), typed and checked before anything is built.

`parse_data_config(config.data)` turns the section into a DataConfig and raises ConfigError naming
the field for an unknown field, a missing required one or a value of the wrong type; the input
pipeline then reads only the DataConfig.

Fields (configs/tiny_cpu.py and configs/common/paper.py set them all):

    dir                          the data folder; "{data_dir}" in sources and tokenizer paths stands
                                 for it ("~" expanded), so one override moves everything
    sources                      comma-separated path[:weight[:shots]] (arc_jax.data.mixture)
    encoder_tokenizer            the encoder's tokenizer file (the decoder's is its config.model entry)
    task                         pretrain | finetune | long_context
    max_len                      tokens per prefix / compressed span / continuation, or of a document
    continuation_prob            pretraining: continuation with this probability, else reconstruction
    shape                        arc_jax.data.packing.PackingShape fields: the static batch shape
    generate = ""                a corpus built in dir before the first read ("tiny_corpus"); "" = none
    corpus = {}                  the generator's keyword arguments
    strict = False               a bad record stops the run instead of being counted and skipped
    chat_template = False        pretraining inside the Llama 2 Chat template
    max_passages = 1             fine-tuning: passages of a record compressed jointly as one document
    worker_count = 0             grain worker processes; 0 = in the main process
    shards = 0                   data shards, each packing shape.*_rows / shards rows; 0 = one per process
"""

from __future__ import annotations

import dataclasses
import os
import typing

from arc_jax.config_loading import ConfigError, to_plain
from arc_jax.data.packing import PackingShape


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dir: str
    sources: str
    encoder_tokenizer: str
    task: str
    max_len: int
    continuation_prob: float
    shape: PackingShape
    generate: str = ""
    corpus: dict = dataclasses.field(default_factory=dict)
    strict: bool = False
    chat_template: bool = False
    max_passages: int = 1
    worker_count: int = 0
    shards: int = 0

    @property
    def folder(self) -> str:
        """The data folder, "~" expanded."""
        return os.path.expanduser(self.dir)

    def resolve(self, path: str) -> str:
        """`path` with "{data_dir}" replaced by the data folder."""
        return path.replace("{data_dir}", self.folder)


def parse_data_config(fields, name: str = "config.data") -> DataConfig:
    """The typed data section; ConfigError (naming the field) for anything the pipeline cannot read."""
    values = _checked_fields(DataConfig, fields, name)
    values["shape"] = PackingShape(**_checked_fields(PackingShape, values["shape"], f"{name}.shape"))
    return DataConfig(**values)


def _checked_fields(cls, fields, name: str) -> dict:
    """`fields` (a dict or ConfigDict) as plain values of `cls`'s field types: unknown, missing and
    wrong-typed fields are reported by name. A dataclass-typed field stays a dict for its own check."""
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
    return {key: _typed(value, dict if dataclasses.is_dataclass(types[key]) else types[key], f"{name}.{key}")
            for key, value in fields.items()}


def _typed(value, expected: type, name: str):
    """`value` if it is of the `expected` type (an int where a float is expected becomes one; a bool
    is not an int here), else ConfigError naming the field."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{name}={value!r}: expected {expected.__name__}, got {type(value).__name__}")
