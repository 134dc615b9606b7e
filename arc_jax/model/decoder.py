"""The frozen decoder LLM, reading text embeddings with compressed vectors spliced in.

Parameter tree: tok_embeddings/embedding [vocab, dim], layers/block/... (stacked),
norm/scale [dim], output [dim, vocab] (none with tie_embeddings: the logits read the embedding table).

`__call__` is the training and scoring path (training may ask for the logits of its loss slots only); `cached_forward` is generation's prefill and decode
step over a KV cache (arc_jax/model/kv_cache.py). Generation prefills with the scanned layers and
decodes with the unrolled layout (`scan_layers=False`: layers/block_0/..., see
arc_jax/model/stack.py), whose parameters `unstack_layers` makes from the scanned ones.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model.attention import AttentionImpl
from arc_jax.model.attention_rows import AttentionRows
from arc_jax.model.config import BackboneConfig
from arc_jax.model.embedding import Embed
from arc_jax.model.kv_cache import KVCache
from arc_jax.model.layers import Norm, constrain_residual
from arc_jax.model.stack import LayerStack
from arc_jax.model.stack import unstack_layers as _unstack_stack


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
    scan_layers: bool = True
    unroll_layers: bool = False  # see LayerStack.unroll
    # Training: no sample of a packed row is longer than this many slots (arc_jax/data/packing.py),
    # so the layers attend windows of their rows; 0 = dense.
    attention_span: int = 0

    def setup(self):
        c = self.cfg
        self.tok_embeddings = Embed(c.vocab_size, c.dim, self.dtype, self.param_dtype)
        self.layers = LayerStack(c, c.n_layers, True, self.dtype, self.param_dtype, self.attention_impl,
                                 self.remat_policy, self.scan_layers, span=self.attention_span,
                                 unroll=self.unroll_layers)
        self.norm = Norm(c.norm_type, c.norm_eps, self.param_dtype)
        if not c.tie_embeddings:
            self.output = self.param("output", nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                             ("embed", "vocab")),
                                     (c.dim, c.vocab_size), self.param_dtype)

    def _embed(self, tokens, compressed, compressed_index):
        h = self.tok_embeddings(tokens)
        return constrain_residual(h if compressed is None else splice_compressed(h, compressed, compressed_index))

    def _logits(self, h):
        """The output head in the compute dtype, then float32: the reference's `output(h).float()`
        (bfloat16 logits from a bfloat16 decoder). Float32 out of a bfloat16 matmul would also
        make its backward a float32 matmul (the float32 cotangent against bfloat16 weights): on an
        H200 that input gradient ran as a TF32 GEMM of 25 ms in a 1,096 ms step."""
        h = self.norm(h)
        if self.cfg.tie_embeddings:
            logits = self.tok_embeddings.attend(h)
        else:
            logits = jnp.einsum("...d,dv->...v", h, self.output.astype(self.dtype))
        return logits.astype(jnp.float32)

    def __call__(self, tokens, segment_ids, positions, compressed=None, compressed_index=None, logit_slots=None,
                 attention_rows: AttentionRows | None = None):
        """Float32 logits [rows, len, vocab]; slots holding compressed vectors are not meaningful.

        Training with a loss buffer passes `logit_slots` [rows, k] (slot indices of each row, -1 for
        none: arc_jax/data/packing.py): the final norm and the output head then run on those k slots
        only and the logits are [rows, k, vocab] (a -1 entry's are not meaningful). `attention_rows`:
        training's, each sample attended alone (arc_jax/model/attention_rows.py)."""
        h = self.layers(self._embed(tokens, compressed, compressed_index), segment_ids, positions,
                        rows=attention_rows)
        if logit_slots is not None:
            h = jnp.take_along_axis(h, jnp.maximum(logit_slots, 0)[..., None].astype(jnp.int32), axis=1)
        logits = self._logits(h)
        return nn.with_logical_constraint(logits, ("activation_batch", "activation_length", "activation_vocab"))

    def cached_forward(self, tokens, positions, cache: KVCache | tuple[KVCache, ...], logit_index, compressed=None,
                       compressed_index=None):
        """Generation: run `tokens` [rows, t] at `positions` [rows, t] through the KV cache (stacked
        when the layers are scanned, one per layer when unrolled: see kv_cache.py).

        Each row's positions are consecutive and name the cache slots written. A prefill (t > 1)
        passes positions 0..t-1 and starts the cache (of any length >= t); a decode step passes
        one token per row at that row's next position. Returns float32 logits [rows, vocab] at
        column `logit_index` [rows] of `tokens` only (a prefill needs each prompt's last one), and
        the updated cache."""
        h = self._embed(tokens, compressed, compressed_index)
        h, cache = self.layers(h, jnp.ones_like(tokens), positions, cache)
        last = jnp.take_along_axis(h, logit_index[:, None, None].astype(jnp.int32), axis=1)[:, 0]
        return self._logits(last), cache


def unstack_layers(params: dict, n_layers: int) -> dict:
    """A Decoder's parameters in the scanned layout, turned into the unrolled one."""
    return params | {"layers": _unstack_stack(params["layers"], n_layers)}
