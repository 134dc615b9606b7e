"""Hugging Face transformers decoders (Llama, Mistral, OLMo, Qwen2/2.5, Qwen3): config.json +
model.safetensors, or shards listed in model.safetensors.index.json.

Names are mapped to Meta names here and everything else goes through layout.py:

  model.embed_tokens.weight                      tok_embeddings.weight
  model.layers.{i}.self_attn.{q,k,v,o}_proj      layers.{i}.attention.{wq,wk,wv,wo}
  model.layers.{i}.self_attn.{q,k,v}_proj.bias   layers.{i}.attention.{wq,wk,wv}.bias   (Qwen2)
  model.layers.{i}.self_attn.{q,k}_norm          layers.{i}.attention.{q,k}_norm       (Qwen3)
  model.layers.{i}.mlp.{gate,up,down}_proj       layers.{i}.feed_forward.{w1,w3,w2}
  model.layers.{i}.input_layernorm               layers.{i}.attention_norm
  model.layers.{i}.post_attention_layernorm      layers.{i}.ffn_norm
  model.norm.weight, lm_head.weight              norm.weight, output.weight

transformers rotates query/key halves (channel j with j + head_dim/2); Meta and arc_jax rotate
consecutive pairs (2j, 2j+1), so q_proj and k_proj rows, their biases and the q/k norm scales are
permuted per head at this border, and only here. OLMo (model_type "olmo") uses a LayerNorm without
weight or bias and with eps fixed at 1e-5: it has no norm tensors. The backbone's options come from
the config: model_type qwen2 means q/k/v biases, qwen3 per-head q/k RMSNorm, tie_word_embeddings a
tied head (no lm_head read; no output parameter). Mistral's and Qwen's sliding windows are not
modelled (attention is full; a config with use_sliding_window is refused): identical up to the
window length, and Mistral 7B v0.2+ has none. Written checkpoints are model_type "llama", "olmo",
"qwen2" or "qwen3", whichever holds the backbone's options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from arc_jax.convert import layout
from arc_jax.convert.errors import ConversionError
from arc_jax.convert.meta import check_params, plan_tensors, write_streamed
from arc_jax.convert.config_fields import field, json_mentions, load_json
from arc_jax.convert.safetensors_io import SafetensorsFile, iter_safetensors
from arc_jax.model.config import BackboneConfig, RopeScaling

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 * 10**9  # transformers' customary shard size
# model_type -> norm_type; other Llama-like types differ in ways arc_jax does not model.
MODEL_TYPES = {"llama": "rmsnorm", "mistral": "rmsnorm", "olmo": "layernorm", "qwen2": "rmsnorm", "qwen3": "rmsnorm"}
# The backbone options each architecture always has (Qwen2's q/k/v projections always carry biases,
# Qwen3 always normalises query and key heads); the rest come from the config's fields.
ARCHITECTURE_OPTIONS = {"qwen2": {"qkv_bias": True}, "qwen3": {"qk_norm": True}}
# transformers' OlmoLayerNorm hard-codes its eps.
OLMO_NORM_EPS = 1e-5

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "olmo": "OlmoForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_BLOCK_NAMES = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attention.q_norm": "self_attn.q_norm", "attention.k_norm": "self_attn.k_norm",
}


def hf_name(meta_key: str) -> str:
    """The transformers name of a Meta-named decoder tensor."""
    if meta_key in _TOP_NAMES:
        return _TOP_NAMES[meta_key]
    _, layer, rest = meta_key.split(".", 2)  # layers.{i}.<module>.weight|bias
    module, kind = rest.rsplit(".", 1)
    return f"model.layers.{layer}.{_BLOCK_NAMES[module]}.{kind}"


def _rope_heads(meta_key: str, cfg: BackboneConfig) -> int | None:
    """Heads in the channels that RoPE rotates, of a q or k projection or bias (its rows) or a
    q/k norm scale (one head); None for every other tensor."""
    module = meta_key.rsplit(".", 1)[0]
    if module.endswith("attention.wq"):
        return cfg.n_heads
    if module.endswith("attention.wk"):
        return cfg.n_kv_heads
    if module.endswith(("attention.q_norm", "attention.k_norm")):
        return 1
    return None


def rotate_half_to_pairs(w: np.ndarray, n_heads: int) -> np.ndarray:
    """q/k rows (or a bias, or a per-head norm scale) from transformers' order (halves) to Meta's
    (interleaved pairs), per head."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def pairs_to_rotate_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of rotate_half_to_pairs."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---- config.json <-> BackboneConfig ----------------------------------------------------------

def _rope(config: dict, where: str) -> tuple[float, RopeScaling | None]:
    """rope_theta and scaling: transformers 5 nests both in rope_parameters, 4.x has top-level
    rope_theta and rope_scaling."""
    nested = config.get("rope_parameters")
    if isinstance(nested, dict):
        scaling, swhere = nested, f"{where}rope_parameters"
        theta = field(nested, "rope_theta", "float", swhere, None)
        if theta is None:
            theta = field(config, "rope_theta", "float", where, 10000.0)
    else:
        scaling, swhere = config.get("rope_scaling") or {}, f"{where}rope_scaling"
        theta = field(config, "rope_theta", "float", where, 10000.0)
        if not isinstance(scaling, dict):
            raise ConversionError(f"{swhere} = {scaling!r} is not a JSON object")
    rope_type = scaling.get("rope_type", scaling.get("type")) or "default"
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ConversionError(f"{swhere}: rope_type {rope_type!r} is not supported (default or llama3)")
    return theta, RopeScaling(
        factor=field(scaling, "factor", "float", swhere),
        low_freq_factor=field(scaling, "low_freq_factor", "float", swhere),
        high_freq_factor=field(scaling, "high_freq_factor", "float", swhere),
        original_max_position=field(scaling, "original_max_position_embeddings", "int", swhere))


def config_from_hf(config: dict, where: str) -> BackboneConfig:
    """The BackboneConfig of a config.json; `where` is "<file>: "."""
    model_type = field(config, "model_type", "str", where)
    if model_type not in MODEL_TYPES:
        raise ConversionError(f"{where}model_type {model_type!r} is not supported ({', '.join(MODEL_TYPES)})")
    if field(config, "hidden_act", "str", where, "silu") != "silu":
        raise ConversionError(f"{where}hidden_act {config['hidden_act']!r}: only silu (SwiGLU) is supported")
    for flag in ("attention_bias", "mlp_bias"):  # attention_bias: biases on q, k, v and o (Llama, Qwen3)
        if field(config, flag, "bool", where, False):
            raise ConversionError(f"{where}{flag} is true: decoders with biases are not supported")
    layer_types = config.get("layer_types") or []
    if not isinstance(layer_types, list):
        raise ConversionError(f"{where}layer_types = {layer_types!r} is not a list")
    if field(config, "use_sliding_window", "bool", where, False) or set(layer_types) - {"full_attention"}:
        raise ConversionError(f"{where}use_sliding_window or layer_types ask for sliding-window attention, "
                              "which is not supported")
    if field(config, "clip_qkv", "float", where, None) is not None:
        raise ConversionError(f"{where}clip_qkv = {config['clip_qkv']}: clipped q/k/v are not supported")
    dim = field(config, "hidden_size", "int", where)
    n_heads = field(config, "num_attention_heads", "int", where)
    theta, scaling = _rope(config, where)
    norm_type = MODEL_TYPES[model_type]
    try:
        cfg = BackboneConfig(
            dim=dim, n_layers=field(config, "num_hidden_layers", "int", where), n_heads=n_heads,
            n_kv_heads=field(config, "num_key_value_heads", "int", where, n_heads),
            head_dim=field(config, "head_dim", "int", where, None) or dim // n_heads,
            hidden_dim=field(config, "intermediate_size", "int", where),
            vocab_size=field(config, "vocab_size", "int", where),
            rope_theta=theta,
            norm_eps=OLMO_NORM_EPS if norm_type == "layernorm" else field(config, "rms_norm_eps", "float", where, 1e-6),
            norm_type=norm_type, rope_scaling=scaling,
            tie_embeddings=field(config, "tie_word_embeddings", "bool", where, False),
            **ARCHITECTURE_OPTIONS.get(model_type, {}))
    except (ValueError, ZeroDivisionError) as e:
        raise ConversionError(f"{where}{e}") from None
    return cfg


def hf_model_type(cfg: BackboneConfig) -> str:
    """The transformers architecture that holds this backbone: its options pick it."""
    options = {name for name in ("qkv_bias", "qk_norm") if getattr(cfg, name)}
    if cfg.norm_type == "layernorm" and not options:
        return "olmo"
    for model_type, implied in (("llama", set()), ("qwen2", {"qkv_bias"}), ("qwen3", {"qk_norm"})):
        if cfg.norm_type == "rmsnorm" and options == implied:
            return model_type
    raise ConversionError(f"no transformers architecture has norm_type {cfg.norm_type!r} with "
                          f"{' and '.join(sorted(options))}: write this decoder as arc_jax")


def hf_config(cfg: BackboneConfig, dtype: np.dtype) -> dict:
    """A config.json that transformers (4.x and 5.x) loads as LlamaForCausalLM, OlmoForCausalLM,
    Qwen2ForCausalLM or Qwen3ForCausalLM. Token ids (bos, eos, pad) belong to the tokenizer, which
    arc_jax does not know here: null."""
    model_type = hf_model_type(cfg)
    olmo = model_type == "olmo"
    if olmo and cfg.norm_eps != OLMO_NORM_EPS:
        raise ConversionError(f"transformers' OLMo fixes the LayerNorm eps at {OLMO_NORM_EPS}; this decoder "
                              f"uses {cfg.norm_eps}")
    scaling = None
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        scaling = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                   "high_freq_factor": s.high_freq_factor, "original_max_position_embeddings": s.original_max_position}
    config = {
        "architectures": [_ARCHITECTURES[model_type]],
        "model_type": model_type,
        "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size, "hidden_act": "silu", "attention_bias": False,
        # The legacy spelling: transformers 5 converts it to rope_parameters, 4.x reads it as is.
        "rope_theta": cfg.rope_theta, "rope_scaling": scaling,
        # Only a bound for generation utilities: RoPE itself is computed for any position.
        "max_position_embeddings": (int(scaling["factor"] * scaling["original_max_position_embeddings"])
                                    if scaling else 8192),
        "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": str(np.dtype(dtype)),
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }
    if olmo:
        config["clip_qkv"] = None
    else:
        config["rms_norm_eps"] = cfg.norm_eps
        config["mlp_bias"] = False
    if model_type.startswith("qwen"):
        config["use_sliding_window"] = False
        del config["attention_bias"]  # Qwen2 has no such field (its q/k/v biases are fixed); Qwen3's means o too
        if model_type == "qwen3":
            config["attention_bias"] = False
    return config


# ---- reading ---------------------------------------------------------------------------------

def matches(path: Path) -> bool:
    path = Path(path)
    if not (path / CONFIG).is_file() or json_mentions(path / CONFIG, "embedder_args"):
        return False  # embedder_args: a released ARC encoder
    return (path / INDEX).is_file() or any(path.glob("*.safetensors"))


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of the checkpoint: those the index names, or model.safetensors."""
    index = path / INDEX
    if index.is_file():
        weight_map = load_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ConversionError(f"{index}: weight_map missing or not a map from tensor names to file names")
        return [path / name for name in sorted(set(weight_map.values()))]
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{path}: no {WEIGHTS}, {INDEX} or other .safetensors file")
    return files


def read(path: Path) -> tuple[BackboneConfig, dict]:
    path = Path(path)
    cfg = config_from_hf(load_json(path / CONFIG), f"{path / CONFIG}: ")
    files = weight_files(path)
    holder: dict[str, SafetensorsFile] = dict(iter_safetensors(files))
    where = str(files[0]) if len(files) == 1 else f"{path} ({len(files)} safetensors shards)"

    meta_keys = layout.decoder_keys(cfg)
    source = {k: hf_name(k) for k in meta_keys}
    found = {k for k in holder if not k.endswith("rotary_emb.inv_freq")}  # a buffer older exports stored
    if cfg.tie_embeddings:  # the head is the embedding table, as in transformers, whether or not a copy is stored
        found.discard(hf_name("output.weight"))
    layout.check_keys(found, set(source.values()), where)
    for key, expected in layout.decoder_shapes(cfg).items():
        name = source[key]
        if holder[name].shape(name) != expected:
            raise ConversionError(f"{holder[name].path}: shape mismatch for {name}: expected {expected}, "
                                  f"found {holder[name].shape(name)}")

    def get(meta_key: str) -> np.ndarray:
        name = source[meta_key]
        w = holder[name].get(name)
        heads = _rope_heads(meta_key, cfg)
        # Both branches copy: params must not hold the files' memory maps.
        return np.array(w) if heads is None else rotate_half_to_pairs(w, heads)

    return cfg, layout.decoder_from_meta(get, meta_keys, cfg, where)


# ---- writing ---------------------------------------------------------------------------------

def hf_tensors(params: dict, cfg: BackboneConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(transformers name, array), one at a time."""
    for key, w in layout.decoder_to_meta(params, cfg):
        heads = _rope_heads(key, cfg)
        yield hf_name(key), (w if heads is None else pairs_to_rotate_half(w, heads))


def write(cfg: BackboneConfig, params: dict, folder: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """config.json and model.safetensors, or model-0000i-of-0000n.safetensors shards of at most
    `max_shard_bytes` (a larger single tensor gets a shard of its own) with an index."""
    folder = Path(folder)
    hf_model_type(cfg)  # a backbone no transformers architecture holds is refused before its params are looked at
    check_params(params, cfg)
    specs = plan_tensors(hf_tensors(params, cfg))
    config = hf_config(cfg, specs[0].dtype)
    shards: list[list] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    source = hf_tensors(params, cfg)
    metadata = {"format": "pt"}  # transformers expects it in safetensors headers
    if len(shards) == 1:
        write_streamed(folder / WEIGHTS, specs, source, metadata)
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_streamed(folder / name, shard, source, metadata)
        weight_map.update({s.name: name for s in shard})
    index = {"metadata": {"total_size": sum(s.nbytes for s in specs)}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
