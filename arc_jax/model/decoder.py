"""The frozen decoder LLM, reading text embeddings with compressed vectors spliced in.

Parameter tree: tok_embeddings/embedding [vocab, dim], layers/block/... (stacked),
norm/scale [dim], output [dim, vocab].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model.attention import AttentionImpl
from arc_jax.model.config import BackboneConfig
from arc_jax.model.embedding import Embed
from arc_jax.model.layers import Norm
from arc_jax.model.stack import LayerStack


def splice_compressed(embeddings: jax.Array, compressed: jax.Array, compressed_index: jax.Array) -> jax.Array:
    """Replace the embedding at every slot with compressed_index >= 0 by that compressed vector."""
    vectors = jnp.take(compressed, jnp.maximum(compressed_index, 0), axis=0).astype(embeddings.dtype)
    return jnp.where(compressed_index[..., None] >= 0, vectors, embeddings)


class Decoder(nn.Module):
    cfg: BackboneConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: AttentionImpl = "xla"
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, tokens, segment_ids, positions, compressed=None, compressed_index=None):
        """Float32 logits [rows, len, vocab]; slots holding compressed vectors are not meaningful."""
        c = self.cfg
        h = Embed(c.vocab_size, c.dim, self.dtype, self.param_dtype, name="tok_embeddings")(tokens)
        if compressed is not None:
            h = splice_compressed(h, compressed, compressed_index)
        h = LayerStack(c, c.n_layers, True, self.dtype, self.param_dtype, self.attention_impl, self.remat_policy,
                       name="layers")(h, segment_ids, positions)
        h = Norm(c.norm_type, c.norm_eps, self.param_dtype, name="norm")(h)
        output = self.param("output", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "vocab")),
                            (c.dim, c.vocab_size), self.param_dtype)
        return jnp.einsum("btd,dv->btv", h, output.astype(self.dtype), preferred_element_type=jnp.float32)
