"""Reference model sizes as plain dicts: `BackboneConfig.from_dict` / `EncoderConfig.from_dict` input.

Config files import them (`from arc_jax.model import presets`) so a training config states which
model it means, not forty numbers. The numbers are the released models' own (their params.json); RoPE
scaling is off everywhere, as the reference trains and evaluates without it. The dicts are shared
module globals: copy one before changing it (`dict(presets.LLAMA_3_1_8B, n_layers=2)`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Llama 3.2 3B: the encoder's backbone before truncation.
LLAMA_3_2_3B: dict[str, Any] = {
    "dim": 3072, "n_layers": 28, "n_heads": 24, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 8192,
    "vocab_size": 128256, "rope_theta": 500000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm", "rope_scaling": None}

LLAMA_3_1_8B: dict[str, Any] = {
    "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 14336,
    "vocab_size": 128256, "rope_theta": 500000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm", "rope_scaling": None}

MISTRAL_7B_V03: dict[str, Any] = {
    "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 14336,
    "vocab_size": 32768, "rope_theta": 1000000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm", "rope_scaling": None}

# Llama 2 7B (and its Chat variant, the long-context decoder): multi-head attention, 32k vocabulary.
LLAMA_2_7B: dict[str, Any] = {
    "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "head_dim": 128, "hidden_dim": 11008,
    "vocab_size": 32000, "rope_theta": 10000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm", "rope_scaling": None}

# OLMo 7B (allenai/OLMo-7B, HF config vocab_size 50304): weightless LayerNorm, multi-head attention.
OLMO_7B: dict[str, Any] = {
    "dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "head_dim": 128, "hidden_dim": 11008,
    "vocab_size": 50304, "rope_theta": 10000.0, "norm_eps": 1e-5, "norm_type": "layernorm", "rope_scaling": None}

# Qwen3 8B (Qwen/Qwen3-8B): per-head q/k RMSNorm, 151936-token vocabulary, untied head.
QWEN3_8B: dict[str, Any] = {
    "dim": 4096, "n_layers": 36, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 12288,
    "vocab_size": 151936, "rope_theta": 1000000.0, "norm_eps": 1e-6, "norm_type": "rmsnorm", "rope_scaling": None,
    "qk_norm": True}

# Qwen2.5 7B (Qwen/Qwen2.5-7B): q/k/v biases, 28 heads over 4 kv heads, untied head.
QWEN2_5_7B: dict[str, Any] = {
    "dim": 3584, "n_layers": 28, "n_heads": 28, "n_kv_heads": 4, "head_dim": 128, "hidden_dim": 18944,
    "vocab_size": 152064, "rope_theta": 1000000.0, "norm_eps": 1e-6, "norm_type": "rmsnorm", "rope_scaling": None,
    "qkv_bias": True}

# 1B-class encoder backbones (whole models; their heads are tied, which an encoder has no use for).
LLAMA_3_2_1B: dict[str, Any] = {
    "dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "head_dim": 64, "hidden_dim": 8192,
    "vocab_size": 128256, "rope_theta": 500000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm", "rope_scaling": None,
    "tie_embeddings": True}

# Qwen3 0.6B: head_dim 128 with 16 heads on a 1024-wide stream (2048-wide attention).
QWEN3_0_6B: dict[str, Any] = {
    "dim": 1024, "n_layers": 28, "n_heads": 16, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 3072,
    "vocab_size": 151936, "rope_theta": 1000000.0, "norm_eps": 1e-6, "norm_type": "rmsnorm", "rope_scaling": None,
    "qk_norm": True, "tie_embeddings": True}

QWEN3_1_7B: dict[str, Any] = {
    "dim": 2048, "n_layers": 28, "n_heads": 16, "n_kv_heads": 8, "head_dim": 128, "hidden_dim": 6144,
    "vocab_size": 151936, "rope_theta": 1000000.0, "norm_eps": 1e-6, "norm_type": "rmsnorm", "rope_scaling": None,
    "qk_norm": True, "tie_embeddings": True}

# The encoder backbones `arc_encoder` takes, by the names `bench inference --encoder-preset` uses.
ENCODER_BACKBONES: dict[str, dict[str, Any]] = {
    "llama3.2-3b": LLAMA_3_2_3B, "llama3.2-1b": LLAMA_3_2_1B, "qwen3-0.6b": QWEN3_0_6B, "qwen3-1.7b": QWEN3_1_7B}

# Layers the released encoders remove from the top of Llama 3.2 3B, and their projector bottleneck.
N_TRUNCATED_LAYERS = 2
PROJECTOR_HIDDEN = 2048


def arc_encoder(pooling_factor: int = 8, n_decoders: int = 1, decoder_dims: int | Sequence[int] = 4096, *,
                special_tokens: bool = True, projector_hidden: int = PROJECTOR_HIDDEN,
                n_truncated_layers: int = N_TRUNCATED_LAYERS, pool_type: str = "mean",
                causal: bool = False, backbone: dict[str, Any] = LLAMA_3_2_3B) -> dict[str, Any]:
    """The released ARC-Encoder as an `EncoderConfig.from_dict` dict.

    Llama 3.2 3B without its last `n_truncated_layers` layers (26 remain), bidirectional, mean
    pooled-queries pooling by `pooling_factor` in the last layer, one projector per decoder
    (3072 -> projector_hidden -> that decoder's width). `decoder_dims` is one width for all
    decoders or one per decoder. `special_tokens=False` drops <Rec>/<Cont> (the Llama 2 Chat
    long-context variant). `backbone` puts another model in Llama 3.2 3B's place (a value of
    ENCODER_BACKBONES), truncated the same way, untied as `arc-jax convert --fresh-encoder` makes it."""
    if pooling_factor < 1:
        raise ValueError(f"pooling_factor must be >= 1, got {pooling_factor}")
    dims = [decoder_dims] * n_decoders if isinstance(decoder_dims, int) else list(decoder_dims)
    if len(dims) != n_decoders or n_decoders < 1:
        raise ValueError(f"{n_decoders} decoder(s) but decoder_dims={decoder_dims!r}")
    backbone = dict(backbone, n_layers=backbone["n_layers"] - n_truncated_layers)
    if backbone.get("tie_embeddings"):
        backbone["tie_embeddings"] = False
    return {
        "backbone": backbone,
        "projectors": [{"in_dim": backbone["dim"], "hidden_dim": projector_hidden, "out_dim": d} for d in dims],
        "n_truncated_layers": n_truncated_layers,
        "compress_rates": [-pooling_factor],
        "pool_type": pool_type,
        "causal": causal,
        "n_memory_tokens": 0,
        "rec_tok": special_tokens,
        "cont_tok": special_tokens,
    }
