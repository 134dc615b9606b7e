"""Token embedding table [vocab, dim]; `attend` reads logits from it (tied input and output embeddings)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class Embed(nn.Module):
    vocab_size: int
    dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (self.vocab_size, self.dim), self.param_dtype)

    def __call__(self, tokens):
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x):
        """Logits x @ table.T [..., vocab] in the compute dtype (Decoder._logits says why)."""
        return jnp.einsum("...d,vd->...v", x, self.embedding.astype(self.dtype))
