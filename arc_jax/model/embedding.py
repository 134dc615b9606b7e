"""Token embedding table [vocab, dim]."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class Embed(nn.Module):
    vocab_size: int
    dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.vocab_size, self.dim), self.param_dtype)
        return jnp.take(table, tokens, axis=0).astype(self.dtype)
