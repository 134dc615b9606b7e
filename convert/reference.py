"""Reference training checkpoints: <run>/checkpoints/checkpoint_NNNNNN/ holding

  params.json                              {"param_dtype", "embedder_params" (the released
                                           embedder_args), "bridge_module" (the bridge_args)}
  embedder/consolidated.safetensors        the released embedder.* tensors without "embedder."
  bridge_module/consolidated.safetensors   the released bridge_module.* tensors without the prefix

The reference does not store the backbone's arguments there. arc_jax writes them under an extra
top-level "model_args" (full backbone, before truncation); to read a checkpoint made by the
reference, pass the backbone's Meta params.json as `backbone_params`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from arc_jax.convert import config_fields, released
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.safetensors_io import SafetensorsFile, write_safetensors
from arc_jax.model.config import EncoderConfig

PARAMS = "params.json"
EMBEDDER = Path("embedder") / "consolidated.safetensors"
BRIDGE = Path("bridge_module") / "consolidated.safetensors"
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")


def _is_checkpoint(folder: Path) -> bool:
    return (folder / PARAMS).is_file() and config_fields.json_mentions(folder / PARAMS, "embedder_params")


def resolve(path: Path) -> Path | None:
    """The checkpoint folder: `path` itself, or the highest checkpoint_NNNNNN of a run folder
    (one still being written, without params.json, is passed over)."""
    path = Path(path)
    if _is_checkpoint(path):
        return path
    for parent in (path / "checkpoints", path):
        if not parent.is_dir():
            continue
        steps = sorted(((int(m.group(1)), p) for p in parent.iterdir() if (m := _CHECKPOINT.match(p.name))),
                       reverse=True)
        for _, step in steps:
            if _is_checkpoint(step):
                return step
    return None


def matches(path: Path) -> bool:
    return resolve(path) is not None


def read(path: Path, backbone_params: Path | None = None) -> tuple[EncoderConfig, dict]:
    """(EncoderConfig, params). `backbone_params` (a Meta params.json of the full backbone) gives
    the backbone's arguments when the checkpoint's params.json has no "model_args"; it wins if both."""
    folder = resolve(path)
    if folder is None:
        raise ConversionError(f"{path}: no {PARAMS} with \"embedder_params\" here or in checkpoints/checkpoint_NNNNNN")
    params_path = folder / PARAMS
    meta = config_fields.load_json(params_path)
    where = str(params_path)
    if backbone_params is not None:
        args = config_fields.load_json(Path(backbone_params))
        args_where = f"{backbone_params}: "
    elif "model_args" in meta:
        args = config_fields.section(meta, "model_args", where)
        args_where = f"{where}: model_args"
    else:
        raise ConversionError(
            f"{params_path}: no \"model_args\": reference training checkpoints do not record the backbone's "
            "arguments; pass the params.json of the backbone the encoder was made from (backbone_params, "
            "e.g. Llama 3.2 3B's params.json)")
    fields = released.encoder_fields(config_fields.section(meta, "embedder_params", where), f"{where}: embedder_params")
    embed_file = SafetensorsFile(folder / EMBEDDER)
    bridge_file = SafetensorsFile(folder / BRIDGE)
    return released.read_tensors(fields, args, config_fields.section(meta, "bridge_module", where), embed_file,
                                 bridge_file, "", "", where, None, args_where)


def write(cfg: EncoderConfig, params: dict, folder: Path) -> None:
    folder = Path(folder)
    embed, bridge = released.encoder_tensors(cfg, params, "", "")
    dtype = np.dtype(embed[0][1].dtype).name  # the table's dtype names the checkpoint's, as the reference does
    meta = {"param_dtype": dtype, "embedder_params": released.embedder_args(cfg),
            "bridge_module": released.bridge_args(cfg), "model_args": released.model_args(cfg)}
    for rel, items in ((EMBEDDER, embed), (BRIDGE, bridge)):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / rel, items)
    (folder / PARAMS).write_text(json.dumps(meta, indent=2) + "\n")
