"""Renaming between Meta/Mistral tensor names and arc_jax parameter trees.

Meta names (also used, with prefixes, by the released ARC-Encoders and the reference training
checkpoints) are the hub every format goes through: Hugging Face names are mapped to Meta names
(with the RoPE permutation) in hf.py, and this module maps Meta names to arc_jax trees:

  tok_embeddings.weight [vocab, dim]          -> tok_embeddings/embedding [vocab, dim]
  layers.{i}.attention.wq.weight [h*d, dim]   -> <stack>/attention/wq [dim, h, d]
  layers.{i}.attention.wk/wv.weight [k*d, dim]-> <stack>/attention/wk, wv [dim, k, d]
  layers.{i}.attention.wo.weight [dim, h*d]   -> <stack>/attention/wo [h, d, dim]
  layers.{i}.feed_forward.w1/w3.weight [f, dim] -> <stack>/feed_forward/w1, w3 [dim, f]
  layers.{i}.feed_forward.w2.weight [dim, f]  -> <stack>/feed_forward/w2 [f, dim]
  layers.{i}.attention_norm/ffn_norm.weight   -> <stack>/attention_norm, ffn_norm/scale
  norm.weight, output.weight [vocab, dim]     -> norm/scale, output [dim, vocab] (none when tied)
  layers.{i}.attention.wq/wk/wv.bias [h*d]    -> <stack>/attention/bq, bk, bv [h, d]   (qkv_bias)
  layers.{i}.attention.q_norm/k_norm.weight   -> <stack>/attention/q_norm, k_norm/scale (qk_norm)

<stack> is layers/block with a leading layer axis for scanned layers, or pooling_layers_{j}.
Every read checks the key set (missing and unexpected keys listed) and every shape.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from arc_jax.convert.errors import ConversionError
from arc_jax.convert.progress import advance
from arc_jax.model.config import BackboneConfig, EncoderConfig

Getter = Callable[[str], np.ndarray]

# Meta suffix -> (path inside a block, meta shape fn, to-arc_jax fn, from-arc_jax fn)
_BLOCK_NORMS = {"attention_norm.weight": ("attention_norm", "scale"), "ffn_norm.weight": ("ffn_norm", "scale")}


def _block_entries(c: BackboneConfig):
    d, h, k, hd, f = c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim
    entries = {
        "attention.wq.weight": (("attention", "wq"), (h * hd, d), lambda w: w.T.reshape(d, h, hd),
                                lambda p: p.reshape(d, h * hd).T),
        "attention.wk.weight": (("attention", "wk"), (k * hd, d), lambda w: w.T.reshape(d, k, hd),
                                lambda p: p.reshape(d, k * hd).T),
        "attention.wv.weight": (("attention", "wv"), (k * hd, d), lambda w: w.T.reshape(d, k, hd),
                                lambda p: p.reshape(d, k * hd).T),
        "attention.wo.weight": (("attention", "wo"), (d, h * hd), lambda w: w.T.reshape(h, hd, d),
                                lambda p: p.reshape(h * hd, d).T),
        "feed_forward.w1.weight": (("feed_forward", "w1"), (f, d), lambda w: w.T, lambda p: p.T),
        "feed_forward.w3.weight": (("feed_forward", "w3"), (f, d), lambda w: w.T, lambda p: p.T),
        "feed_forward.w2.weight": (("feed_forward", "w2"), (d, f), lambda w: w.T, lambda p: p.T),
    }
    if c.norm_type == "rmsnorm":
        for name, path in _BLOCK_NORMS.items():
            entries[name] = (path, (d,), lambda w: w, lambda p: p)
    if c.qkv_bias:
        for w, heads in (("q", h), ("k", k), ("v", k)):
            entries[f"attention.w{w}.bias"] = (("attention", f"b{w}"), (heads * hd,),
                                               lambda b, n=heads: b.reshape(n, hd), lambda p, n=heads: p.reshape(n * hd))
    if c.qk_norm:
        for w in ("q", "k"):
            entries[f"attention.{w}_norm.weight"] = (("attention", f"{w}_norm", "scale"), (hd,), lambda w: w,
                                                     lambda p: p)
    return entries


def _set(tree: dict, path: tuple[str, ...], value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for p in path:
        tree = tree[p]
    return tree


def check_keys(found: set[str], expected: set[str], where: str) -> None:
    """One-line error listing missing and unexpected keys."""
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_abbrev(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_abbrev(unexpected)}")
        raise ConversionError(f"{where}: " + "; ".join(parts))


def _abbrev(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"


def checked(get: Getter, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    w = get(key)
    if tuple(w.shape) != tuple(shape):
        raise ConversionError(f"{where}: shape mismatch for {key}: expected {tuple(shape)}, found {tuple(w.shape)}")
    advance(w.nbytes)
    return w


def block_keys(c: BackboneConfig, layer: int, prefix: str = "") -> list[str]:
    return [f"{prefix}layers.{layer}.{s}" for s in _block_entries(c)]


def read_blocks(get: Getter, c: BackboneConfig, layers: range, where: str, prefix: str = "") -> dict:
    """Meta-named layers -> one block tree stacked on a leading layer axis."""
    tree: dict = {}
    for suffix, (path, shape, to_tree, _) in _block_entries(c).items():
        stacked = None
        for j, i in enumerate(layers):
            w = to_tree(checked(get, f"{prefix}layers.{i}.{suffix}", shape, where))
            if stacked is None:
                stacked = np.empty((len(layers), *w.shape), w.dtype)
            stacked[j] = w
        _set(tree, path, stacked)
    return tree


def read_block(get: Getter, c: BackboneConfig, layer: int, where: str, prefix: str = "") -> dict:
    """One Meta-named layer -> an unstacked block tree (an encoder pooling layer)."""
    return _unstack(read_blocks(get, c, range(layer, layer + 1), where, prefix))


def _unstack(tree):
    if isinstance(tree, dict):
        return {k: _unstack(v) for k, v in tree.items()}
    return tree[0]


def write_block(block: dict, c: BackboneConfig, layer: int, prefix: str = "", index: int | None = None
                ) -> Iterator[tuple[str, np.ndarray]]:
    """(Meta name, array) for one layer; `index` selects it from a stacked block. The arrays are
    views: writers copy each into contiguous bytes once, when they write it."""
    for suffix, (path, _, _, from_tree) in _block_entries(c).items():
        p = np.asarray(_get(block, path))
        yield f"{prefix}layers.{layer}.{suffix}", from_tree(p if index is None else p[index])


# ---- decoders --------------------------------------------------------------------------------

def decoder_keys(c: BackboneConfig) -> set[str]:
    return set(decoder_shapes(c))


def decoder_shapes(c: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """Meta name -> shape of every decoder tensor, to check file headers before reading data."""
    shapes = {"tok_embeddings.weight": (c.vocab_size, c.dim)}
    if not c.tie_embeddings:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    if c.norm_type == "rmsnorm":
        shapes["norm.weight"] = (c.dim,)
    for i in range(c.n_layers):
        shapes.update({f"layers.{i}.{suffix}": entry[1] for suffix, entry in _block_entries(c).items()})
    return shapes


def decoder_from_meta(get: Getter, keys: set[str], c: BackboneConfig, where: str) -> dict:
    check_keys(keys, decoder_keys(c), where)
    params = {
        "tok_embeddings": {"embedding": np.asarray(checked(get, "tok_embeddings.weight", (c.vocab_size, c.dim), where))},
        "layers": {"block": read_blocks(get, c, range(c.n_layers), where)},
    }
    if not c.tie_embeddings:
        params["output"] = np.ascontiguousarray(checked(get, "output.weight", (c.vocab_size, c.dim), where).T)
    if c.norm_type == "rmsnorm":
        params["norm"] = {"scale": np.asarray(checked(get, "norm.weight", (c.dim,), where))}
    return params


def decoder_to_meta(params: dict, c: BackboneConfig) -> Iterator[tuple[str, np.ndarray]]:
    yield "tok_embeddings.weight", np.asarray(params["tok_embeddings"]["embedding"])
    for i in range(c.n_layers):
        yield from write_block(params["layers"]["block"], c, i, index=i)
    if c.norm_type == "rmsnorm":
        yield "norm.weight", np.asarray(params["norm"]["scale"])
    if not c.tie_embeddings:
        yield "output.weight", np.asarray(params["output"]).T


# ---- encoders (the backbone part; heads are format-specific) --------------------------------

def encoder_backbone_keys(cfg: EncoderConfig, prefix: str = "") -> set[str]:
    keys = {f"{prefix}tok_embeddings.weight"}
    for i in range(cfg.backbone.n_layers):
        keys.update(block_keys(cfg.backbone, i, prefix))
    if cfg.n_memory_tokens:
        keys.add(f"{prefix}mem_embeddings.0.weight")
    return keys


def encoder_backbone_from_meta(get: Getter, cfg: EncoderConfig, where: str, prefix: str = "") -> dict:
    c = cfg.backbone
    n_pool = len(cfg.compress_rates)
    n_scan = c.n_layers - n_pool
    params: dict = {"tok_embeddings": {"embedding": np.asarray(
        checked(get, f"{prefix}tok_embeddings.weight", (c.vocab_size, c.dim), where))}}
    if n_scan:
        params["layers"] = {"block": read_blocks(get, c, range(n_scan), where, prefix)}
    for j in range(n_pool):
        params[f"pooling_layers_{j}"] = read_block(get, c, n_scan + j, where, prefix)
    if cfg.n_memory_tokens:
        params["memory_tokens"] = np.asarray(
            checked(get, f"{prefix}mem_embeddings.0.weight", (cfg.n_memory_tokens, c.dim), where))
    return params


def encoder_backbone_to_meta(params: dict, cfg: EncoderConfig, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    c = cfg.backbone
    n_scan = c.n_layers - len(cfg.compress_rates)
    yield f"{prefix}tok_embeddings.weight", np.asarray(params["tok_embeddings"]["embedding"])
    for i in range(n_scan):
        yield from write_block(params["layers"]["block"], c, i, prefix, index=i)
    for j in range(len(cfg.compress_rates)):
        yield from write_block(params[f"pooling_layers_{j}"], c, n_scan + j, prefix)
    if cfg.n_memory_tokens:
        yield f"{prefix}mem_embeddings.0.weight", np.asarray(params["memory_tokens"])
