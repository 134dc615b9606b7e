"""The one attention function every layer calls, so a fused kernel can be swapped in per backend.

Masking is described by segment ids and positions, never by a dense mask from the caller:
- a query attends a key only when both carry the same segment id, and id 0 (padding) attends
  nothing and is attended by nothing;
- causal attention additionally requires key position <= query position. Positions restart at 0
  for each packed sequence, so this is causal within a segment. Pooled queries carry positions
  0..m-1 against keys 0..n-1, which reproduces the reference's "top-left" causal pooling mask.

Implementations:
- "xla": plain einsum + float32 softmax; the reference path, used by the CPU tests.
- "jax_nn": `jax.nn.dot_product_attention`, which picks cuDNN flash attention on GPU when the
  shapes and dtypes allow it, and XLA elsewhere.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

AttentionImpl = Literal["xla", "jax_nn"]

# Large but finite: a fully masked row (a padding query) then gets a uniform softmax instead of
# NaNs; its output is ignored downstream.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal: bool):
    """Boolean mask [batch, q_len, kv_len]: True where the query may attend the key."""
    same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    mask = same & (kv_segment_ids[:, None, :] != 0)
    if causal:
        mask &= kv_positions[:, None, :] <= q_positions[:, :, None]
    return mask


def _xla_attention(q, k, v, mask):
    b, t, h, d = q.shape
    n_kv = k.shape[2]
    q = q.reshape(b, t, n_kv, h // n_kv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    logits = logits * (d**-0.5)
    logits = jnp.where(mask[:, None, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def _jax_nn_attention(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None])


_IMPLEMENTATIONS = {"xla": _xla_attention, "jax_nn": _jax_nn_attention}


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    q_positions: jax.Array,
    kv_positions: jax.Array,
    causal: bool,
    implementation: AttentionImpl = "xla",
) -> jax.Array:
    """Grouped-query attention. q [b, t, heads, d]; k, v [b, s, kv_heads, d] -> [b, t, heads, d]."""
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose from {sorted(_IMPLEMENTATIONS)}")
    mask = attention_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal)
    return _IMPLEMENTATIONS[implementation](q, k, v, mask)
