"""Released ARC-Encoders (Hugging Face hub, PyTorchModelHubMixin): model.safetensors + config.json.

config.json holds the reference model's constructor arguments:
  bridge_args    {bridge_type: "mlp" (one decoder) | "multi_module", in_dim, hidden_dim, out_dim}
  model_args     the FULL backbone before truncation (dim, n_layers, head_dim, hidden_dim, n_heads,
                 n_kv_heads, norm_eps, vocab_size, rope_theta, ...); numbers may be strings
  embedder_args  {n_truncated_layers, compress_rates, pooling_module {pool_type, where},
                 causal_embedder, rec_tok, cont_tok, memory_tokens, trained_layers, train_embedding_mtx}
  llms, embedder (ignored), empty_init (number of decoders, when present)
model.safetensors:
  embedder.<Meta backbone names>, embedder.mem_embeddings.0.weight [n_mem, dim],
  embedder.rec_tok.{d}.weight, embedder.cont_tok.{d}.weight [1, dim],
  bridge_module[.{d}].layer1.weight [hidden, in], bridge_module[.{d}].layer2.weight [out, hidden]

The config and head helpers here are shared with the reference training-checkpoint layout
(reference.py), which stores the same tensors without the two prefixes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np

from arc_jax.convert import layout
from arc_jax.convert.config_fields import as_int, backbone_from_args, field, json_mentions, load_json, section
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.safetensors_io import SafetensorsFile, write_safetensors
from arc_jax.model import param_groups
from arc_jax.model.config import EncoderConfig, ProjectorConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
EMBEDDER_PREFIX = "embedder."
BRIDGE_PREFIX = "bridge_module."

# Reference pool_type -> arc_jax pool_type; every other reference pooling is a different algorithm.
POOL_TYPES = {"mean_pooled_queries": "mean", "last_pooled_queries": "last"}
BRIDGE_TYPES = ("mlp", "multi_module")


# ---- config <-> EncoderConfig ---------------------------------------------------------------

def encoder_fields(args: dict, where: str) -> dict:
    """EncoderConfig keyword arguments (all but backbone and projectors) from embedder_args."""
    rates_value = args.get("compress_rates") or []
    if not isinstance(rates_value, list):
        raise ConversionError(f"{where}.compress_rates = {rates_value!r} is not a list")
    try:
        rates = tuple(as_int(r) for r in rates_value)
    except (TypeError, ValueError):
        raise ConversionError(f"{where}.compress_rates = {rates_value!r}: entries must be integers") from None
    if any(r >= 0 for r in rates):
        raise ConversionError(f"{where}.compress_rates = {list(rates)}: only negative entries (-k pools by k) "
                              "are supported")
    n_memory = field(args, "memory_tokens", "int", where, 0)
    if n_memory and rates:
        raise ConversionError(f"{where}: memory_tokens = {n_memory} with compress_rates = {list(rates)}; "
                              "the reference uses memory tokens only without pooling")
    if field(args, "mixed_method", "bool", where, False):
        raise ConversionError(f"{where}.mixed_method = true is not supported")
    pool_type = "mean"
    if rates:  # the pooling settings only matter when something is pooled
        pooling = section(args, "pooling_module", where)
        pwhere = f"{where}.pooling_module"
        reference_type = field(pooling, "pool_type", "str", pwhere)
        if reference_type not in POOL_TYPES:
            raise ConversionError(f"{pwhere}.pool_type = {reference_type!r} is not supported "
                                  f"(supported: {', '.join(POOL_TYPES)})")
        placement = field(pooling, "where", "str", pwhere, "before")
        if placement != "before":
            raise ConversionError(f"{pwhere}.where = {placement!r} is not supported (supported: 'before')")
        if pooling.get("based_on") is not None:
            raise ConversionError(f"{pwhere}.based_on = {pooling['based_on']!r} is not supported (supported: null)")
        pool_type = POOL_TYPES[reference_type]
    return dict(
        n_truncated_layers=field(args, "n_truncated_layers", "int", where),
        compress_rates=rates, pool_type=pool_type,
        causal=field(args, "causal_embedder", "bool", where),
        n_memory_tokens=n_memory,
        rec_tok=field(args, "rec_tok", "bool", where, False),
        cont_tok=field(args, "cont_tok", "bool", where, False))


def model_args(cfg: EncoderConfig) -> dict:
    """The reference's model_args: the full backbone, before truncation."""
    b = cfg.backbone
    return {"dim": b.dim, "n_layers": b.n_layers + cfg.n_truncated_layers, "head_dim": b.head_dim,
            "hidden_dim": b.hidden_dim, "n_heads": b.n_heads, "n_kv_heads": b.n_kv_heads, "norm_eps": b.norm_eps,
            "vocab_size": b.vocab_size, "rope_theta": b.rope_theta, "max_batch_size": 1}


def embedder_args(cfg: EncoderConfig) -> dict:
    # The reference accepts only pool_type "mean" next to memory tokens; pooling is unused then.
    pool_type = "mean" if cfg.n_memory_tokens else f"{cfg.pool_type}_pooled_queries"
    return {"n_truncated_layers": cfg.n_truncated_layers, "compress_rates": list(cfg.compress_rates),
            "pooling_module": {"pool_type": pool_type, "where": "before"},
            "causal_embedder": cfg.causal, "rec_tok": cfg.rec_tok, "cont_tok": cfg.cont_tok,
            "memory_tokens": cfg.n_memory_tokens,
            # Training-only settings arc_jax does not record: everything trainable, the default.
            "trained_layers": cfg.backbone.n_layers, "train_embedding_mtx": True}


def shared_projector(cfg: EncoderConfig) -> ProjectorConfig:
    """The one projector shape the reference layouts can describe."""
    if not cfg.projectors:
        raise ConversionError("the encoder has no decoder heads; the reference layouts need at least one")
    if len(set(cfg.projectors)) > 1:
        dims = ", ".join(f"{p.in_dim}->{p.hidden_dim}->{p.out_dim}" for p in cfg.projectors)
        raise ConversionError(f"projectors of different shapes ({dims}) cannot be stored in the reference layouts, "
                              "whose bridge_args give one in_dim/hidden_dim/out_dim for all decoders")
    return cfg.projectors[0]


def bridge_args(cfg: EncoderConfig) -> dict:
    p = shared_projector(cfg)
    return {"bridge_type": "mlp" if cfg.n_decoders == 1 else "multi_module",
            "in_dim": p.in_dim, "hidden_dim": p.hidden_dim, "out_dim": p.out_dim}


def check_writable(cfg: EncoderConfig) -> None:
    """What the reference model cannot express, refused before anything is written."""
    b = cfg.backbone
    if b.norm_type != "rmsnorm":
        raise ConversionError(f"norm_type {b.norm_type!r}: the reference encoder is a Llama (RMSNorm) model")
    if b.rope_scaling is not None:
        raise ConversionError("rope_scaling is set, but the reference encoder never applies RoPE scaling: "
                              "the released/reference layouts cannot record it")
    for option in ("qkv_bias", "qk_norm"):
        if getattr(b, option):
            raise ConversionError(f"{option} is set: the reference encoder is a Llama model without it, so the "
                                  "released/reference layouts cannot hold this encoder; write it as arc_jax")
    shared_projector(cfg)


# ---- decoder heads (special vectors and projectors) -----------------------------------------

def bridge_key(prefix: str, multi: bool, d: int, layer: str) -> str:
    return f"{prefix}{d}.{layer}.weight" if multi else f"{prefix}{layer}.weight"


def count_decoders(bridge: dict, bridge_keys: set[str], prefix: str, where: str, n_declared: int | None) -> int:
    """Decoders in a checkpoint: 1 for "mlp", else `n_declared` (empty_init) or the bridge keys."""
    bridge_type = field(bridge, "bridge_type", "str", where)
    if bridge_type not in BRIDGE_TYPES:
        raise ConversionError(f"{where}.bridge_type = {bridge_type!r} is not supported "
                              f"(supported: {', '.join(BRIDGE_TYPES)})")
    if bridge_type == "mlp":
        return 1
    if n_declared is not None and n_declared > 0:
        return n_declared
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.layer1\.weight$")
    indices = [int(m.group(1)) for k in bridge_keys if (m := pattern.match(k))]
    if not indices:
        raise ConversionError(f"{where}: bridge_type 'multi_module' but no {prefix}<d>.layer1.weight tensor")
    return max(indices) + 1


def projectors_from_args(bridge: dict, n_decoders: int, dim: int, shape_of: Callable[[str], tuple], multi: bool,
                         prefix: str, where: str) -> tuple[ProjectorConfig, ...]:
    """Projector shapes from bridge_args; dimensions it leaves out are read off the tensors."""
    first = bridge_key(prefix, multi, 0, "layer1"), bridge_key(prefix, multi, 0, "layer2")
    try:
        hidden = field(bridge, "hidden_dim", "int", where) if "hidden_dim" in bridge else shape_of(first[0])[0]
        out = field(bridge, "out_dim", "int", where) if "out_dim" in bridge else shape_of(first[1])[0]
    except KeyError as e:
        raise ConversionError(f"{where}: projector dimensions not given and tensor {e} missing") from None
    in_dim = field(bridge, "in_dim", "int", where, dim)
    if in_dim != dim:
        raise ConversionError(f"{where}.in_dim = {in_dim} differs from the encoder width dim = {dim}")
    return tuple(ProjectorConfig(in_dim, hidden, out) for _ in range(n_decoders))


def head_keys(cfg: EncoderConfig, multi: bool, embed_prefix: str, bridge_prefix: str) -> tuple[set, set]:
    """(keys stored with the embedder, keys stored with the bridge) of every decoder head."""
    embed, bridge = set(), set()
    for d in range(cfg.n_decoders):
        if cfg.rec_tok:
            embed.add(f"{embed_prefix}rec_tok.{d}.weight")
        if cfg.cont_tok:
            embed.add(f"{embed_prefix}cont_tok.{d}.weight")
        bridge.update(bridge_key(bridge_prefix, multi, d, layer) for layer in ("layer1", "layer2"))
    return embed, bridge


def read_heads(get_embed: layout.Getter, get_bridge: layout.Getter, cfg: EncoderConfig, multi: bool,
               embed_prefix: str, bridge_prefix: str, embed_where: str, bridge_where: str) -> dict:
    """decoder_{d} trees; torch Linear weights [out, in] become arc_jax kernels [in, out]."""
    heads = {}
    dim = cfg.backbone.dim
    for d, p in enumerate(cfg.projectors):
        head = {
            "layer1": np.ascontiguousarray(layout.checked(
                get_bridge, bridge_key(bridge_prefix, multi, d, "layer1"), (p.hidden_dim, p.in_dim), bridge_where).T),
            "layer2": np.ascontiguousarray(layout.checked(
                get_bridge, bridge_key(bridge_prefix, multi, d, "layer2"), (p.out_dim, p.hidden_dim), bridge_where).T),
        }
        for name, on in (("rec_tok", cfg.rec_tok), ("cont_tok", cfg.cont_tok)):
            if on:
                w = layout.checked(get_embed, f"{embed_prefix}{name}.{d}.weight", (1, dim), embed_where)
                head[name] = np.array(w.reshape(dim))
        heads[param_groups.head(d)] = head
    return heads


def write_heads(params: dict, cfg: EncoderConfig, multi: bool, embed_prefix: str, bridge_prefix: str
                ) -> tuple[list, list]:
    """(embedder items, bridge items) as (name, array) in the reference's shapes."""
    embed, bridge = [], []
    for d in range(cfg.n_decoders):
        where = param_groups.head(d)
        head = _subtree(params, where)
        for name, on in (("rec_tok", cfg.rec_tok), ("cont_tok", cfg.cont_tok)):
            if on:
                embed.append((f"{embed_prefix}{name}.{d}.weight", np.asarray(_leaf(head, name, where))[None]))
        for layer in ("layer1", "layer2"):
            kernel = np.asarray(_leaf(head, layer, where))
            bridge.append((bridge_key(bridge_prefix, multi, d, layer), kernel.T))
    return embed, bridge


def _subtree(params: dict, name: str) -> dict:
    if name not in params:
        raise ConversionError(f"params: missing {name}")
    return params[name]


def _leaf(tree: dict, name: str, where: str):
    if name not in tree:
        raise ConversionError(f"params: missing {where}/{name}")
    return tree[name]


def expected_shapes(cfg: EncoderConfig, multi: bool, embed_prefix: str, bridge_prefix: str) -> dict[str, tuple]:
    """Every tensor name of the reference layouts with its torch shape."""
    b = cfg.backbone
    shapes = {f"{embed_prefix}tok_embeddings.weight": (b.vocab_size, b.dim)}
    block = {suffix: shape for suffix, (_, shape, _, _) in layout._block_entries(b).items()}
    for i in range(b.n_layers):
        shapes.update({f"{embed_prefix}layers.{i}.{s}": shape for s, shape in block.items()})
    if cfg.n_memory_tokens:
        shapes[f"{embed_prefix}mem_embeddings.0.weight"] = (cfg.n_memory_tokens, b.dim)
    for d, p in enumerate(cfg.projectors):
        for name, on in (("rec_tok", cfg.rec_tok), ("cont_tok", cfg.cont_tok)):
            if on:
                shapes[f"{embed_prefix}{name}.{d}.weight"] = (1, b.dim)
        shapes[bridge_key(bridge_prefix, multi, d, "layer1")] = (p.hidden_dim, p.in_dim)
        shapes[bridge_key(bridge_prefix, multi, d, "layer2")] = (p.out_dim, p.hidden_dim)
    return shapes


def encoder_tensors(cfg: EncoderConfig, params: dict, embed_prefix: str, bridge_prefix: str) -> tuple[list, list]:
    """(embedder items, bridge items) of an arc_jax encoder, every shape checked."""
    check_writable(cfg)
    multi = cfg.n_decoders > 1
    try:
        embed = list(layout.encoder_backbone_to_meta(params, cfg, embed_prefix))
    except KeyError as e:
        raise ConversionError(f"params: missing {e} for the encoder configuration") from None
    except ValueError as e:  # a reshape that does not fit the configuration
        raise ConversionError(f"params: a backbone tensor does not fit the configuration ({e})") from None
    head_embed, bridge = write_heads(params, cfg, multi, embed_prefix, bridge_prefix)
    embed += head_embed
    expected = expected_shapes(cfg, multi, embed_prefix, bridge_prefix)
    for key, array in embed + bridge:
        if tuple(array.shape) != expected[key]:
            raise ConversionError(f"params: shape mismatch for {key}: expected {expected[key]}, "
                                  f"found {tuple(array.shape)}")
    return embed, bridge


def read_tensors(cfg_fields: dict, args: dict, bridge: dict, embed_file: SafetensorsFile,
                 bridge_file: SafetensorsFile, embed_prefix: str, bridge_prefix: str, where: str,
                 n_declared: int | None, args_where: str | None = None) -> tuple[EncoderConfig, dict]:
    """(EncoderConfig, params) from parsed config sections and the tensor file(s), which may be one
    file (released) or two (reference). `where` names the config file for config errors,
    `args_where` the source of the backbone arguments (default: the config's model_args)."""
    embed_keys = {k for k in embed_file.keys() if k.startswith(embed_prefix)}
    bridge_keys = {k for k in bridge_file.keys() if k.startswith(bridge_prefix)}
    if embed_file is bridge_file:  # one file: any key under neither prefix is unexpected
        embed_keys |= set(embed_file.keys()) - bridge_keys
    mem = re.compile(rf"^{re.escape(embed_prefix)}mem_embeddings\.(\d+)\.weight$")
    mem_sets = sorted(k for k in embed_keys if mem.match(k))
    if len(mem_sets) > 1:
        raise ConversionError(f"{embed_file.path}: {len(mem_sets)} sets of memory tokens ({', '.join(mem_sets)}); "
                              "arc_jax supports one set shared by all decoders")
    embedding = f"{embed_prefix}tok_embeddings.weight"
    vocab = embed_file.shape(embedding)[0] if embedding in embed_file else None
    backbone = backbone_from_args(args, cfg_fields["n_truncated_layers"], args_where or f"{where}: model_args",
                                  vocab)
    multi = field(bridge, "bridge_type", "str", f"{where}: bridge_args", "") == "multi_module"
    n_decoders = count_decoders(bridge, bridge_keys, bridge_prefix, f"{where}: bridge_args", n_declared)
    projectors = projectors_from_args(bridge, n_decoders, backbone.dim, bridge_file.shape, multi, bridge_prefix,
                                      f"{where}: bridge_args")
    try:
        cfg = EncoderConfig(backbone=backbone, projectors=projectors, **cfg_fields)
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None

    expected_embed, expected_bridge = head_keys(cfg, multi, embed_prefix, bridge_prefix)
    expected_embed |= layout.encoder_backbone_keys(cfg, embed_prefix)
    if embed_file is bridge_file:
        layout.check_keys(embed_keys | bridge_keys, expected_embed | expected_bridge, str(embed_file.path))
    else:
        layout.check_keys(embed_keys, expected_embed, str(embed_file.path))
        layout.check_keys(bridge_keys, expected_bridge, str(bridge_file.path))
    params = layout.encoder_backbone_from_meta(embed_file.get, cfg, str(embed_file.path), embed_prefix)
    params.update(read_heads(embed_file.get, bridge_file.get, cfg, multi, embed_prefix, bridge_prefix,
                             str(embed_file.path), str(bridge_file.path)))
    return cfg, params


# ---- the format -------------------------------------------------------------------------------

def matches(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file() and json_mentions(Path(path) / CONFIG, "embedder_args")


def read(path: Path) -> tuple[EncoderConfig, dict]:
    path = Path(path)
    config_path = path / CONFIG
    config = load_json(config_path)
    where = str(config_path)
    fields = encoder_fields(section(config, "embedder_args", where), f"{where}: embedder_args")
    n_declared = config.get("empty_init")
    if isinstance(n_declared, bool) or not isinstance(n_declared, int):
        n_declared = None  # only a positive count says how many decoders the bridge holds
    weights = SafetensorsFile(path / WEIGHTS)
    return read_tensors(fields, section(config, "model_args", where), section(config, "bridge_args", where),
                        weights, weights, EMBEDDER_PREFIX, BRIDGE_PREFIX, where, n_declared)


def hub_config(cfg: EncoderConfig) -> dict:
    """config.json as the reference hub model's constructor reads it."""
    return {"bridge_args": bridge_args(cfg), "model_args": model_args(cfg), "embedder_args": embedder_args(cfg),
            "llms": [], "embedder": None, "empty_init": cfg.n_decoders}


def write(cfg: EncoderConfig, params: dict, folder: Path) -> None:
    folder = Path(folder)
    embed, bridge = encoder_tensors(cfg, params, EMBEDDER_PREFIX, BRIDGE_PREFIX)
    write_safetensors(folder / WEIGHTS, embed + bridge)
    (folder / CONFIG).write_text(json.dumps(hub_config(cfg), indent=2) + "\n")

