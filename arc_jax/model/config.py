"""Model configurations: the backbone shared by both sides, the ARC encoder, its projectors.

Plain frozen dataclasses so they are hashable (usable as static jit arguments) and trivially
serialisable to JSON (`to_dict` / `from_dict`), which is how arc_jax checkpoints store them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

NormType = Literal["rmsnorm", "layernorm"]
PoolType = Literal["mean", "last"]


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 RoPE frequency scaling (off by default: the reference never applies it)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """A Llama-family pre-norm transformer (Llama 2/3, Mistral, OLMo, Qwen2/2.5, Qwen3).

    The variants are options of the one block, each off by default: `qkv_bias` adds biases to
    the query, key and value projections (Qwen2/2.5); `qk_norm` applies an RMSNorm over head_dim
    to every query and key head before RoPE (Qwen3); `tie_embeddings` reads the output logits
    from the embedding table instead of a separate head. `head_dim` need not be dim / n_heads.
    """

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    # "layernorm" is OLMo's weightless LayerNorm; "rmsnorm" everything else.
    norm_type: NormType = "rmsnorm"
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.norm_type not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm_type must be 'rmsnorm' or 'layernorm', got {self.norm_type!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
    """One decoder's projector y = W2 (W1 x): in_dim -> hidden_dim -> out_dim, no bias."""

    in_dim: int
    hidden_dim: int
    out_dim: int


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The ARC encoder: a truncated backbone that pools, plus per-decoder heads.

    `backbone.n_layers` is the number of layers actually run (after truncation);
    `n_truncated_layers` records how many were removed from the source model.
    """

    backbone: BackboneConfig
    projectors: tuple[ProjectorConfig, ...]
    n_truncated_layers: int = 0
    # One entry per pooling layer, applied to the last len(compress_rates) layers; -k pools by k.
    compress_rates: tuple[int, ...] = (-8,)
    pool_type: PoolType = "mean"
    causal: bool = False
    # ICAE-like baseline: learned vectors appended to each text; only their outputs are kept.
    n_memory_tokens: int = 0
    rec_tok: bool = True
    cont_tok: bool = True

    def __post_init__(self):
        if any(r >= 0 for r in self.compress_rates):
            raise ValueError(f"compress_rates entries must be negative (-k pools by k): {self.compress_rates}")
        if len(self.compress_rates) > self.backbone.n_layers:
            raise ValueError(
                f"{len(self.compress_rates)} pooling layers but the encoder has {self.backbone.n_layers} layers")
        if self.n_memory_tokens and self.compress_rates:
            raise ValueError("memory tokens and pooling are alternatives: set compress_rates=() to use memory tokens")
        if self.pool_type not in ("mean", "last"):
            raise ValueError(f"pool_type must be 'mean' or 'last', got {self.pool_type!r}")
        for i, p in enumerate(self.projectors):
            if p.in_dim != self.backbone.dim:
                raise ValueError(f"projector {i} in_dim={p.in_dim} != encoder dim {self.backbone.dim}")

    @property
    def pooling_factors(self) -> tuple[int, ...]:
        return tuple(-r for r in self.compress_rates)

    @property
    def n_decoders(self) -> int:
        return len(self.projectors)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["compress_rates"] = list(self.compress_rates)
        d["projectors"] = [dataclasses.asdict(p) for p in self.projectors]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig.from_dict(d["backbone"])
        d["projectors"] = tuple(ProjectorConfig(**p) for p in d["projectors"])
        d["compress_rates"] = tuple(d["compress_rates"])
        return cls(**d)


def llama_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Feed-forward width of a Meta Llama params.json, which does not state it."""
    hidden = int(8 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
