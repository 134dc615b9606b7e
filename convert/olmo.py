"""OLMo's own checkpoint layout (allenai/OLMo-7B, the files the reference's README downloads):
model.safetensors with fused projections, beside the reference's params.json (dim, n_heads,
n_layers, norm_eps, vocab_size) or allenai's own config.json (d_model, n_heads, n_layers, ...).
Read only: arc_jax writes OLMo decoders in the -hf layout (hf.py) or its own.

  model.transformer.wte.weight [vocab, dim]               tok_embeddings.weight
  model.transformer.blocks.{i}.att_proj.weight            q, k, v stacked: [(h + 2 kv) * d, dim]
  model.transformer.blocks.{i}.attn_out.weight            layers.{i}.attention.wo
  model.transformer.blocks.{i}.ff_proj.weight             up then gate: [2 * hidden, dim]
  model.transformer.blocks.{i}.ff_out.weight              layers.{i}.feed_forward.w2
  model.transformer.ff_out.weight                         output.weight (absent: tied to wte)

The feed-forward width and the kv heads are read from the fused shapes (the reference's params.json
states neither). OLMo rotates query/key halves like transformers, so q and k rows are permuted to
arc_jax's pairs as in hf.py. Its LayerNorms have no weights: nothing else is stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arc_jax.convert import layout
from arc_jax.convert.config_fields import field, load_json
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.hf import rotate_half_to_pairs
from arc_jax.convert.safetensors_io import SafetensorsFile
from arc_jax.model.config import BackboneConfig

WEIGHTS = "model.safetensors"
PARAMS = "params.json"  # the reference's, written by hand as its README says
CONFIG = "config.json"  # allenai's own
PREFIX = "model.transformer."
_EMBEDDING = PREFIX + "wte.weight"
_OUTPUT = PREFIX + "ff_out.weight"
# allenai config.json field -> the params.json field it stands for.
_CONFIG_FIELDS = {"d_model": "dim", "n_heads": "n_heads", "n_layers": "n_layers", "rope_theta": "rope_theta"}


def matches(path: Path) -> bool:
    file = Path(path) / WEIGHTS
    if not file.is_file():
        return False
    try:
        return _EMBEDDING in SafetensorsFile(file).keys()
    except ConversionError:
        return False


def _block(i: int, name: str) -> str:
    return f"{PREFIX}blocks.{i}.{name}.weight"


def _arguments(path: Path) -> tuple[dict, str]:
    """The backbone fields (params.json names) and where they come from."""
    if (path / PARAMS).is_file():
        return load_json(path / PARAMS), f"{path / PARAMS}: "
    if (path / CONFIG).is_file():
        config = load_json(path / CONFIG)
        return {ours: config[theirs] for theirs, ours in _CONFIG_FIELDS.items() if theirs in config}, f"{path / CONFIG}: "
    raise ConversionError(f"{path}: an OLMo {WEIGHTS} needs a {PARAMS} (dim, n_heads, n_layers) or allenai's {CONFIG}")


def read_config(path: Path, file: SafetensorsFile) -> BackboneConfig:
    args, where = _arguments(path)
    dim, n_heads = field(args, "dim", "int", where), field(args, "n_heads", "int", where)
    if n_heads < 1 or dim % n_heads:
        raise ConversionError(f"{where}dim = {dim} is not a multiple of n_heads = {n_heads}")
    head_dim = dim // n_heads
    for name in ("att_proj", "ff_proj"):
        if _block(0, name) not in file.keys():
            raise ConversionError(f"{file.path}: missing key {_block(0, name)}")
    fused_rows, ff_rows = file.shape(_block(0, "att_proj"))[0], file.shape(_block(0, "ff_proj"))[0]
    n_kv_heads, extra = divmod(fused_rows // head_dim - n_heads, 2)
    if fused_rows % head_dim or extra or n_kv_heads < 1 or ff_rows % 2:
        raise ConversionError(f"{file.path}: att_proj has {fused_rows} rows and ff_proj {ff_rows}, which do not "
                              f"split into q, k, v of {n_heads} heads of {head_dim} and two halves")
    try:
        return BackboneConfig(
            dim=dim, n_layers=field(args, "n_layers", "int", where), n_heads=n_heads, n_kv_heads=n_kv_heads,
            head_dim=head_dim, hidden_dim=ff_rows // 2, vocab_size=file.shape(_EMBEDDING)[0],
            rope_theta=field(args, "rope_theta", "float", where, 10000.0),
            norm_eps=field(args, "norm_eps", "float", where, 1e-5), norm_type="layernorm",
            tie_embeddings=_OUTPUT not in file.keys())
    except ValueError as e:
        raise ConversionError(f"{where}{e}") from None


def _own_shapes(c: BackboneConfig) -> dict[str, tuple[int, ...]]:
    d, f = c.dim, c.hidden_dim
    shapes = {_EMBEDDING: (c.vocab_size, d)}
    if not c.tie_embeddings:
        shapes[_OUTPUT] = (c.vocab_size, d)
    for i in range(c.n_layers):
        shapes.update({_block(i, "att_proj"): ((c.n_heads + 2 * c.n_kv_heads) * c.head_dim, d),
                       _block(i, "attn_out"): (d, c.n_heads * c.head_dim),
                       _block(i, "ff_proj"): (2 * f, d), _block(i, "ff_out"): (d, f)})
    return shapes


def _source(meta_key: str, c: BackboneConfig) -> tuple[str, slice | None, int | None]:
    """(own key, row slice of it, heads whose halves RoPE rotates) of a Meta-named tensor."""
    if meta_key == "tok_embeddings.weight":
        return _EMBEDDING, None, None
    if meta_key == "output.weight":
        return _OUTPUT, None, None
    _, layer, name = meta_key.split(".", 2)
    i, q, kv, f = int(layer), c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.hidden_dim
    return {"attention.wq.weight": (_block(i, "att_proj"), slice(0, q), c.n_heads),
            "attention.wk.weight": (_block(i, "att_proj"), slice(q, q + kv), c.n_kv_heads),
            "attention.wv.weight": (_block(i, "att_proj"), slice(q + kv, q + 2 * kv), None),
            "attention.wo.weight": (_block(i, "attn_out"), None, None),
            "feed_forward.w3.weight": (_block(i, "ff_proj"), slice(0, f), None),
            "feed_forward.w1.weight": (_block(i, "ff_proj"), slice(f, 2 * f), None),
            "feed_forward.w2.weight": (_block(i, "ff_out"), None, None)}[name]


def read(path: Path) -> tuple[BackboneConfig, dict]:
    path = Path(path)
    file = SafetensorsFile(path / WEIGHTS)
    cfg = read_config(path, file)
    expected = _own_shapes(cfg)
    layout.check_keys(set(file.keys()), set(expected), str(file.path))
    for key, shape in expected.items():
        if file.shape(key) != shape:
            raise ConversionError(f"{file.path}: shape mismatch for {key}: expected {shape}, found {file.shape(key)}")

    def get(meta_key: str) -> np.ndarray:
        key, rows, heads = _source(meta_key, cfg)
        w = file.get(key)
        w = np.array(w if rows is None else w[rows])  # a copy: params must not hold the file's memory map
        return w if heads is None else rotate_half_to_pairs(w, heads)

    return cfg, layout.decoder_from_meta(get, layout.decoder_keys(cfg), cfg, str(file.path))
