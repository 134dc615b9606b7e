"""The decoder's key/value cache for generation: static shapes, one slot per position.

Rows are right-padded: the token at RoPE position p of a row lives in slot p, so a row of
prompt length L decodes its next token at position and slot L whatever the other rows' lengths.
A query at position p attends slots 0..p (the causal rule on positions). Slots past a row's
current position may hold padding from the prefill or nothing yet; causality never reads them,
and the decode step at that position overwrites them before they are read.

Two layouts follow the layer stack's (arc_jax/model/stack.py): the prefill runs the scanned
stack with one stacked cache [layers, ...]; the decode loop runs the unrolled stack with one
cache per layer (`per_layer`), each its own buffer, updated in place.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from arc_jax.model.config import BackboneConfig


class KVCache(NamedTuple):
    """Keys and values after RoPE: [batch, slots, kv_heads, head_dim] for one layer, with a leading
    [layers] axis for the whole stack in the scanned layout."""

    k: jax.Array
    v: jax.Array

    @property
    def length(self) -> int:
        return self.k.shape[-3]

    def write(self, k: jax.Array, v: jax.Array, starts: jax.Array) -> KVCache:
        """One layer: put k, v [batch, t, kv_heads, head_dim] in slots starts[b] .. starts[b] + t - 1."""
        put = jax.vmap(lambda cache, new, start: jax.lax.dynamic_update_slice_in_dim(cache, new, start, axis=0))
        return KVCache(put(self.k, k.astype(self.k.dtype), starts), put(self.v, v.astype(self.v.dtype), starts))

    def per_layer(self, length: int) -> tuple[KVCache, ...]:
        """A stacked cache as one cache per layer, with empty slots appended up to `length`."""
        pad = [(0, 0)] * (self.k.ndim - 1)
        pad[-3] = (0, length - self.length)
        return tuple(KVCache(jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in zip(self.k, self.v))


def empty_cache(cfg: BackboneConfig, batch: int, length: int, dtype=jnp.float32) -> KVCache:
    """Zeros for the whole stack, stacked: [n_layers, batch, length, n_kv_heads, head_dim]."""
    shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
