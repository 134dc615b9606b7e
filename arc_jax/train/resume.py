"""A workdir remembers its run: restarting it with a config that trains something else stops.

Every checkpoint holds the config it was saved with. `check_resumable` compares the config of a
restart with the one of the workdir's newest checkpoint whose config reads, before anything is
built, and stops with one line listing each differing field (old -> new), unless the caller
accepts the changes knowingly (`arc-jax train --accept-config-changes`).

RESUMABLE lists the fields that may change on resume; a field under one of them may too. They
say how long, how often and on what hardware the run goes on, not what it trains:
    max_steps                        train further (the one-cycle schedule stretches from there on)
    checkpoint_every, keep_checkpoints
    log_every, eval                  logging and held-out evaluation
    max_bad_steps                    patience with non-finite steps
    mesh_shape                       restore reshards the state onto the new mesh
    remat_policy                     memory against time, same numbers
    unroll_layers                    compile time against step time, same numbers
    data.worker_count                how many processes read the input, not what they read
Everything else (model, data, optimiser, seed, grad_accum, dtypes, ...) is the run itself.

A field added to the config after a run was saved is absent from its checkpoints; where its value
means what the code did before the field existed (ADDED_AS_OFF: the batch-shape options that are
off at 0), absent and that value are the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from arc_jax.config_loading import ConfigError, to_plain
from arc_jax.train.checkpoint import newest_intact

RESUMABLE = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "eval", "max_bad_steps", "mesh_shape",
             "remat_policy", "unroll_layers", "data.worker_count")
ABSENT = "(absent)"
ADDED_AS_OFF = {"data.shape.encoder_span": 0, "data.shape.decoder_span": 0, "data.shape.loss_slots": 0,
                "data.shape.encoder_attention_rows": [], "data.shape.decoder_attention_rows": [],
                "data.shape.attention_groups": 1}


def flat_fields(tree, prefix: str = "") -> dict:
    """{"a.b.c": value} of a plain config; lists of dicts are indexed ("model.decoders.0.head"),
    other lists are values."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flat_fields(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        return flat_fields({str(i): v for i, v in enumerate(tree)}, prefix)
    return {prefix[:-1]: tree}


def resumable(field: str) -> bool:
    return any(field == name or field.startswith(name + ".") for name in RESUMABLE)


def config_changes(saved: dict, config: ml_collections.ConfigDict | dict) -> list[str]:
    """"field old -> new" for each field outside RESUMABLE where `config` differs from `saved` (a
    config as a checkpoint holds it), sorted by field."""
    old = {**ADDED_AS_OFF, **flat_fields(saved)}
    new = {**ADDED_AS_OFF, **flat_fields(json.loads(json.dumps(to_plain(config))))}  # as a checkpoint would hold it
    return [f"{field} {_shown(old.get(field, ABSENT))} -> {_shown(new.get(field, ABSENT))}"
            for field in sorted(set(old) | set(new))
            if not resumable(field) and old.get(field, ABSENT) != new.get(field, ABSENT)]


def saved_config(workdir: str | Path) -> tuple[int, dict] | None:
    """(step, config) of the newest committed checkpoint of `workdir` whose config reads."""
    found, config, _ = newest_intact(workdir, lambda folder: _read_json(folder / "config" / "metadata"))
    return None if found is None else (int(found.name), config)


def check_resumable(workdir: str | Path, config: ml_collections.ConfigDict, accept: bool = False) -> list[str]:
    """The changes of `config` from the run saved in `workdir` (none for a new workdir); with
    changes and not `accept`, ConfigError listing them in one line."""
    saved = saved_config(workdir)
    if saved is None:
        return []
    step, old = saved
    changes = config_changes(old, config)
    if changes and not accept:
        raise ConfigError(f"{workdir}: this config is not the run saved there (checkpoint {step}): "
                          f"{'; '.join(changes)}. Only {', '.join(RESUMABLE)} may change on resume; pass "
                          "--accept-config-changes to resume with these changes anyway, or use a new workdir")
    return changes


def _read_json(path: Path):
    return json.loads(path.read_text())


def _shown(value) -> str:
    return value if value == ABSENT else json.dumps(value)
