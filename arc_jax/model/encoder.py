"""The ARC encoder: a truncated Llama backbone whose last layers pool, plus one head per decoder.

Parameter tree (plain pytree after `nn.unbox`):
  tok_embeddings/embedding [vocab, dim]
  layers/block/...           the non-pooling layers, stacked on a leading "layers" axis
  pooling_layers_{i}/...     the last len(compress_rates) layers, pooling one after the other
  memory_tokens [n, dim]     ICAE-like baseline only
  decoder_{d}/{rec_tok, cont_tok [dim], layer1 [dim, hidden], layer2 [hidden, out]}

In a pooling layer the block input h is pooled within each group (mean, or the group's last
token) into m query vectors q_in; the block then runs with q_in as its residual stream, queries
from norm(q_in) at RoPE positions 0..m-1, keys and values from norm(h) at positions 0..n-1.
There is no final norm: the output is the residual stream of the last layer.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from arc_jax.model import param_groups
from arc_jax.model.attention import AttentionImpl
from arc_jax.model.config import EncoderConfig, ProjectorConfig
from arc_jax.model.embedding import Embed
from arc_jax.model.inputs import EncoderInputs, PoolingStage
from arc_jax.model.layers import Block, constrain_residual
from arc_jax.model.stack import LayerStack

# torch.nn.Linear's default init (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class DecoderHead(nn.Module):
    """What is specific to one decoder: its <Rec>/<Cont> vectors and its projector."""

    cfg: ProjectorConfig
    rec_tok: bool
    cont_tok: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.cfg
        part = nn.with_logical_partitioning
        self.layer1 = self.param("layer1", part(torch_linear_init, ("embed", "mlp")), (c.in_dim, c.hidden_dim),
                                 self.param_dtype)
        self.layer2 = self.param("layer2", part(torch_linear_init, ("mlp", "embed")), (c.hidden_dim, c.out_dim),
                                 self.param_dtype)
        ones = part(nn.initializers.ones, ("embed",))
        if self.rec_tok:
            self.rec = self.param(param_groups.REC_TOK, ones, (c.in_dim,), self.param_dtype)
        if self.cont_tok:
            self.cont = self.param(param_groups.CONT_TOK, ones, (c.in_dim,), self.param_dtype)

    def project(self, x):
        x = x.astype(self.dtype) @ self.layer1.astype(self.dtype)
        return x @ self.layer2.astype(self.dtype)

    def special_vectors(self):
        """[2, dim]: <Rec> then <Cont> in encoder space (ones where the model has none)."""
        dim = self.cfg.in_dim
        rec = self.rec if self.rec_tok else jnp.ones((dim,), self.param_dtype)
        cont = self.cont if self.cont_tok else jnp.ones((dim,), self.param_dtype)
        return jnp.stack([rec, cont]).astype(self.dtype)

    def __call__(self, x):
        return self.project(x), self.project(self.special_vectors())


def pool(h: jax.Array, stage: PoolingStage, pool_type: str) -> jax.Array:
    """Pool h [rows, n, dim] into [rows, m, dim] following the host-made stage plan."""
    if pool_type == "last":
        return jnp.take_along_axis(h, stage.last_index[..., None], axis=1)
    out_len = stage.segment_ids.shape[1]
    segment_sum = jax.vmap(lambda x, g: jax.ops.segment_sum(x, g, num_segments=out_len))
    sums = segment_sum(h.astype(jnp.float32), stage.group_ids)
    counts = segment_sum(jnp.ones(h.shape[:2], jnp.float32), stage.group_ids)
    return (sums / jnp.maximum(counts, 1.0)[..., None]).astype(h.dtype)


class ARCEncoder(nn.Module):
    cfg: EncoderConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention_impl: AttentionImpl = "xla"
    remat_policy: str = "none"
    unroll_layers: bool = False  # see LayerStack.unroll
    # Every row holds at most one text (Encoder.compress knows per call): masks become lengths.
    one_text_per_row: bool = False
    # Training: no context of a packed row is longer than this many slots (arc_jax/data/packing.py),
    # so the layers before pooling attend windows of their rows; 0 = dense.
    attention_span: int = 0

    def setup(self):
        cfg, b = self.cfg, self.cfg.backbone
        n_pool = len(cfg.compress_rates)
        self.tok_embeddings = Embed(b.vocab_size, b.dim, self.dtype, self.param_dtype)
        if b.n_layers > n_pool:
            self.layers = LayerStack(b, b.n_layers - n_pool, cfg.causal, self.dtype, self.param_dtype,
                                     self.attention_impl, self.remat_policy, one_text_per_row=self.one_text_per_row,
                                     span=self.attention_span, unroll=self.unroll_layers)
        self.pooling_layers = [
            Block(b, cfg.causal, self.dtype, self.param_dtype, self.attention_impl, self.one_text_per_row)
            for _ in range(n_pool)]
        if cfg.n_memory_tokens:
            self.memory_tokens = self.param(
                "memory_tokens", nn.with_logical_partitioning(nn.initializers.ones, (None, "embed")),  # as the reference
                (cfg.n_memory_tokens, b.dim), self.param_dtype)
        self.heads = [
            DecoderHead(p, cfg.rec_tok, cfg.cont_tok, self.dtype, self.param_dtype, name=param_groups.head(d))
            for d, p in enumerate(cfg.projectors)]

    def encode(self, inputs: EncoderInputs) -> tuple[jax.Array, jax.Array]:
        """Raw encoder output [rows, out_len, dim] and its segment ids [rows, out_len]."""
        h = self.tok_embeddings(inputs.tokens)
        if inputs.memory_ids is not None:
            memory = jnp.take(self.memory_tokens, jnp.maximum(inputs.memory_ids, 0), axis=0).astype(h.dtype)
            h = jnp.where(inputs.memory_ids[..., None] >= 0, memory, h)
        h = constrain_residual(h)
        segment_ids, positions = inputs.segment_ids, inputs.positions
        rows = inputs.attention_rows or (None,) * (len(inputs.stages) + 1)
        if self.cfg.backbone.n_layers > len(self.cfg.compress_rates):
            h = self.layers(h, segment_ids, positions, rows=rows[0])
        for layer, stage, kv_rows, q_rows in zip(self.pooling_layers, inputs.stages, rows, rows[1:]):
            queries = constrain_residual(pool(h, stage, self.cfg.pool_type))
            h = layer(h, segment_ids, positions, queries, stage.segment_ids, stage.positions, rows=kv_rows,
                      q_rows=q_rows)
            segment_ids, positions = stage.segment_ids, stage.positions
        if inputs.output_index is not None:
            h = jnp.take_along_axis(h, inputs.output_index[..., None], axis=1)
            segment_ids = jnp.take_along_axis(segment_ids, inputs.output_index, axis=1)
        return constrain_residual(h), segment_ids

    def compress(self, inputs: EncoderInputs, decoder: int) -> tuple[jax.Array, jax.Array]:
        """Projected encoder output [rows, out_len, out_dim] and projected [<Rec>, <Cont>] [2, out_dim]."""
        h, _ = self.encode(inputs)
        return self.heads[decoder](h)

    def compressed_table(self, inputs: EncoderInputs, decoder: int) -> jax.Array:
        """What a training batch's decoder reads: project(concat(encoder outputs flattened over
        rows, [<Rec>, <Cont>])), [rows * out_len + 2, out_dim]; see arc_jax/data/packing.py."""
        h, _ = self.encode(inputs)
        head = self.heads[decoder]
        flat = jnp.concatenate([h.reshape(-1, h.shape[-1]), head.special_vectors().astype(h.dtype)])
        # Any decoder row may read any vector: every device holds the whole (small) table.
        return nn.with_logical_constraint(head.project(flat), (None, "activation_embed"))

    def __call__(self, inputs: EncoderInputs):
        # Touches every decoder head so `init` creates all parameters.
        h, segment_ids = self.encode(inputs)
        return h, segment_ids, [head(h) for head in self.heads]
