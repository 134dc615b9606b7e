"""A new ARC encoder to pretrain, made from a decoder checkpoint (a Llama 3.2 3B in the paper; a
Llama 3.2 1B or a Qwen3 works the same way, its q/k/v biases or q/k norms kept).

The decoder's last n_truncated_layers layers, final norm and output head are dropped; the first
layers are kept unchanged, the last len(compress_rates) of them becoming the pooling layers.
Per-decoder heads start as the reference starts them: <Rec>/<Cont> vectors of ones and projector
kernels drawn like torch.nn.Linear's default (Kaiming uniform, a = sqrt(5):
U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax
import numpy as np

from arc_jax.convert.errors import ConversionError
from arc_jax.model import param_groups
from arc_jax.model.config import BackboneConfig, EncoderConfig, ProjectorConfig


def torch_linear_uniform(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """torch.nn.Linear's default weight init for a kernel with `fan_in` inputs."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


def fresh_encoder_from_decoder(
    backbone: BackboneConfig,
    params: dict,
    *,
    n_truncated_layers: int = 2,
    compress_rates: Sequence[int] = (-8,),
    pool_type: str = "mean",
    causal: bool = False,
    n_memory_tokens: int = 0,
    rec_tok: bool = True,
    cont_tok: bool = True,
    out_dims: Sequence[int] = (4096,),
    hidden_dim: int = 2048,
    seed: int = 0,
    keep_rope_scaling: bool = False,
    dtype=None,
) -> tuple[EncoderConfig, dict]:
    """(EncoderConfig, params) of a new encoder from a decoder's config and parameter tree.

    One decoder head per entry of `out_dims` (the width of each decoder that will read it).
    RoPE scaling is dropped unless `keep_rope_scaling`: the reference never applies it.
    `dtype` of the new head parameters defaults to the embedding table's.
    """
    if not 0 <= n_truncated_layers < backbone.n_layers:
        raise ConversionError(f"n_truncated_layers={n_truncated_layers} must leave at least one of the "
                              f"{backbone.n_layers} layers")
    if not out_dims:
        raise ConversionError("out_dims is empty: an encoder needs at least one decoder head")
    n_layers = backbone.n_layers - n_truncated_layers
    # An encoder has no output head, so nothing is tied in it.
    encoder_backbone = dataclasses.replace(
        backbone, n_layers=n_layers, rope_scaling=backbone.rope_scaling if keep_rope_scaling else None,
        tie_embeddings=False)
    try:
        cfg = EncoderConfig(
            backbone=encoder_backbone,
            projectors=tuple(ProjectorConfig(backbone.dim, hidden_dim, out) for out in out_dims),
            n_truncated_layers=n_truncated_layers, compress_rates=tuple(compress_rates), pool_type=pool_type,
            causal=causal, n_memory_tokens=n_memory_tokens, rec_tok=rec_tok, cont_tok=cont_tok)
    except ValueError as e:
        raise ConversionError(f"encoder configuration: {e}") from None

    try:
        embedding = np.asarray(params["tok_embeddings"]["embedding"])
        stacked = params["layers"]["block"]
    except KeyError as e:
        raise ConversionError(f"decoder params: missing {e}") from None
    depth = {np.shape(leaf)[0] for leaf in jax.tree.leaves(stacked)}
    if depth != {backbone.n_layers}:
        raise ConversionError(f"decoder params: stacked layers of depth {sorted(depth)}, the config says "
                              f"{backbone.n_layers}")
    dtype = np.dtype(dtype or embedding.dtype)
    n_scan = n_layers - len(cfg.compress_rates)
    tree: dict = {"tok_embeddings": {"embedding": embedding}}
    if n_scan:
        tree["layers"] = {"block": jax.tree.map(lambda w: np.asarray(w)[:n_scan], stacked)}
    for j in range(len(cfg.compress_rates)):
        tree[f"pooling_layers_{j}"] = jax.tree.map(lambda w, j=j: np.asarray(w)[n_scan + j], stacked)

    rng = np.random.default_rng(seed)
    if n_memory_tokens:
        # The reference initialises its memory embeddings to ones.
        tree["memory_tokens"] = np.ones((n_memory_tokens, backbone.dim), dtype)
    for d, p in enumerate(cfg.projectors):
        head = {"layer1": torch_linear_uniform(rng, p.in_dim, (p.in_dim, p.hidden_dim), dtype),
                "layer2": torch_linear_uniform(rng, p.hidden_dim, (p.hidden_dim, p.out_dim), dtype)}
        if rec_tok:
            head["rec_tok"] = np.ones(p.in_dim, dtype)
        if cont_tok:
            head["cont_tok"] = np.ones(p.in_dim, dtype)
        tree[param_groups.head(d)] = head
    return cfg, tree


def fresh_encoder(backbone_path: str | os.PathLike, **kwargs) -> tuple[EncoderConfig, dict]:
    """A new encoder from the decoder checkpoint at `backbone_path` (any decoder layout arc_jax
    reads); keyword arguments as `fresh_encoder_from_decoder`."""
    from arc_jax.convert import read_decoder

    backbone, params = read_decoder(backbone_path)
    return fresh_encoder_from_decoder(backbone, params, **kwargs)
