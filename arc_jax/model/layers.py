"""Transformer building blocks of the Llama family: norms, RoPE, attention, SwiGLU, the block.

Weights are declared with logical axis names (embed, heads, kv_heads, head_dim, mlp, vocab) so
the sharding rules of a config can place them; `nn.unbox` turns them into plain arrays.
RoPE uses the Meta/Mistral convention (consecutive channel pairs); checkpoints in the rotate-half
convention are permuted by the converters, never here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.model.attention import AttentionImpl, causal_prompt_attention, dot_product_attention, traced_platform
from arc_jax.model.attention_rows import AttentionRows
from arc_jax.model.config import BackboneConfig, RopeScaling
from arc_jax.model.kv_cache import KVCache

Dtype = jnp.dtype

# Logical names of the residual stream's axes [rows, tokens, width], placed by the sharding rules
# in context (arc_jax.sharding: rows split like the batch); with no rules in context, no-ops.
RESIDUAL_AXES = ("activation_batch", "activation_length", "activation_embed")


def constrain_residual(h: jax.Array) -> jax.Array:
    return nn.with_logical_constraint(h, RESIDUAL_AXES)


def _param(module: nn.Module, name: str, shape, axes, dtype, init=nn.initializers.lecun_normal()):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class Norm(nn.Module):
    """RMSNorm (x * rsqrt(mean(x^2) + eps) * weight) or OLMo's weightless LayerNorm, in float32,
    over the last axis, whose logical name is `axis` ("head_dim" for Qwen3's per-head q/k norms)."""

    norm_type: str
    eps: float
    param_dtype: Dtype = jnp.float32
    axis: str = "embed"

    @nn.compact
    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        if self.norm_type == "layernorm":
            x32 = x32 - x32.mean(-1, keepdims=True)
            return (x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.eps)).astype(x.dtype)
        scale = _param(self, "scale", (x.shape[-1],), (self.axis,), self.param_dtype, nn.initializers.ones)
        y = x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + self.eps)
        scaled = _scaled_by_matmul_gradient if _on_one_cpu_device() else jnp.multiply
        return scaled(y.astype(x.dtype), scale.astype(x.dtype))


def _on_one_cpu_device() -> bool:
    """Whether the function being traced is for one CPU device (the mesh it traces under, else the
    default backend's)."""
    mesh = jax.sharding.get_abstract_mesh()
    return traced_platform() == "cpu" and (mesh.empty or mesh.size == 1)


@jax.custom_vjp
def _scaled_by_matmul_gradient(y, scale):
    """y * scale, whose gradient for `scale` (the sum over every token of g * y) is a matmul of
    g * y with ones. As a reduction, XLA:CPU fused it into its consumer, the optimiser's update of
    the layers' stacked scales, as a loop over each output element that reads a column of the
    [tokens, dim] cotangents with a stride (bench_cpu_55m: ~0.3 s of its ~2.9 s of op time a step;
    with the matmul its step takes 0.96x as long, A/B in one process: README, Benchmark). On the
    demo's two CPU devices the matmuls made its steps 1.1x slower, so there it stays a reduction;
    other platforms are not measured and keep it too."""
    return y * scale


def _scaled_forward(y, scale):
    return y * scale, (y, scale)


def _scaled_backward(saved, g):
    y, scale = saved
    tokens = tuple(range(g.ndim - 1))
    ones = jnp.ones(g.shape[:-1], g.dtype)
    d_scale = jax.lax.dot_general(ones, g * y, ((tokens, tokens), ((), ())), preferred_element_type=jnp.float32)
    return g * scale, d_scale.astype(scale.dtype)


_scaled_by_matmul_gradient.defvjp(_scaled_forward, _scaled_backward)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
    """Inverse frequencies theta^(-2i/head_dim), optionally with Llama 3.1 scaling."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if scaling is None:
        return freqs.astype(np.float32)
    low_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position / scaling.high_freq_factor
    wavelen = 2 * np.pi / freqs
    smooth = (scaling.original_max_position / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    scaled = np.where(wavelen > low_wavelen, freqs / scaling.factor, freqs)
    middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    scaled = np.where(middle, (1 - smooth) * freqs / scaling.factor + smooth * freqs, scaled)
    return scaled.astype(np.float32)


def rope_rotations(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos and sin of each position's angles, [b, t, d/2], computed once into memory.

    Left to itself, XLA:CPU fuses cos and sin into every op that reads them, so they are computed
    again for each head's element of q and k, forward and backward (bench_cpu_55m's decoder q, rotated
    forward and backward: 10.4 ms, against 1.6 ms so). An optimisation barrier does not stop it (XLA:CPU
    drops barriers before fusing); a gather is a fusion boundary XLA keeps for an expensive operand,
    and an identity gather of the table along its slots is one, at the cost of a copy of it. Along
    the slots, not the flattened [b * t] rows and slots: rows split over devices keep their tables
    where they are (gathering across the split axis, XLA had all-gathered every row's table onto
    every device, in every layer)."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, d/2]
    table = jnp.stack([jnp.cos(angles), jnp.sin(angles)])  # [2, b, t, d/2]
    table = table[:, :, jnp.arange(angles.shape[1])]
    return table[0], table[1]


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate consecutive channel pairs (0,1), (2,3), ... of x [b, t, heads, d] by position."""
    cos, sin = rope_rotations(positions, inv_freq)
    cos, sin = cos[:, :, None], sin[:, :, None]
    x32 = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    even, odd = x32[..., 0], x32[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention whose queries may come from a different (pooled) sequence.

    With a `cache` (generation, x_q is x_kv): the new keys and values are written at the slots of
    their positions and (output, cache) is returned. Several tokens are a prefill, which starts
    the cache at position 0 and attends itself; one token per row is a decode step, which attends
    the cache causally."""

    cfg: BackboneConfig
    causal: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    implementation: AttentionImpl = "xla"
    one_text_per_row: bool = False  # see attention.dot_product_attention
    span: int = 0  # the longest text of a packed row, 0 = unknown; see attention.dot_product_attention

    @nn.compact
    def __call__(self, x_q, x_kv, q_segment_ids, kv_segment_ids, q_positions, kv_positions, same_sequence=False,
                 cache: KVCache | None = None, rows: tuple[AttentionRows, AttentionRows] | None = None):
        c = self.cfg
        wq = _param(self, "wq", (c.dim, c.n_heads, c.head_dim), ("embed", "heads", "head_dim"), self.param_dtype)
        wk = _param(self, "wk", (c.dim, c.n_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), self.param_dtype)
        wv = _param(self, "wv", (c.dim, c.n_kv_heads, c.head_dim), ("embed", "kv_heads", "head_dim"), self.param_dtype)
        wo = _param(self, "wo", (c.n_heads, c.head_dim, c.dim), ("heads", "head_dim", "embed"), self.param_dtype)
        cast = lambda w: w.astype(self.dtype)
        q = jnp.einsum("btd,dhk->bthk", x_q, cast(wq))
        k = jnp.einsum("bsd,dhk->bshk", x_kv, cast(wk))
        v = jnp.einsum("bsd,dhk->bshk", x_kv, cast(wv))
        if c.qkv_bias:  # Qwen2/2.5
            zeros = nn.initializers.zeros
            q = q + cast(_param(self, "bq", (c.n_heads, c.head_dim), ("heads", "head_dim"), self.param_dtype, zeros))
            k = k + cast(_param(self, "bk", (c.n_kv_heads, c.head_dim), ("kv_heads", "head_dim"), self.param_dtype,
                                zeros))
            v = v + cast(_param(self, "bv", (c.n_kv_heads, c.head_dim), ("kv_heads", "head_dim"), self.param_dtype,
                                zeros))
        if c.qk_norm:  # Qwen3: every query and key head RMS-normalised before RoPE
            q = Norm("rmsnorm", c.norm_eps, self.param_dtype, "head_dim", name="q_norm")(q)
            k = Norm("rmsnorm", c.norm_eps, self.param_dtype, "head_dim", name="k_norm")(k)
        inv_freq = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        q = apply_rope(q, q_positions, inv_freq)
        k = apply_rope(k, kv_positions, inv_freq)
        if cache is not None:
            return self._attend_cache(q, k, v, q_positions, cache, cast(wo))
        out = dot_product_attention(
            q, k, v,
            q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
            q_positions=q_positions, kv_positions=kv_positions,
            causal=self.causal, implementation=self.implementation, same_sequence=same_sequence,
            one_text_per_row=self.one_text_per_row, span=self.span, rows=rows)
        return jnp.einsum("bthk,hkd->btd", out, cast(wo))

    def _attend_cache(self, q, k, v, q_positions, cache: KVCache, wo):
        cache = cache.write(k, v, q_positions[:, 0])
        b, t = q_positions.shape
        if t > 1:
            # A prefill starts the cache at position 0: the prompt attends its own keys (the
            # configured kernel applies), which are also the cache's only valid slots.
            out = causal_prompt_attention(q, k, v, self.implementation)
        else:
            # A decode step: one query against the whole cache, which the plain "xla" path does best.
            slots = jnp.broadcast_to(jnp.arange(cache.length, dtype=q_positions.dtype), (b, cache.length))
            out = dot_product_attention(
                q, cache.k.astype(q.dtype), cache.v.astype(q.dtype), q_segment_ids=jnp.ones((b, 1), jnp.int32),
                kv_segment_ids=jnp.ones((b, cache.length), jnp.int32), q_positions=q_positions, kv_positions=slots,
                causal=True, implementation="xla")
        return jnp.einsum("bthk,hkd->btd", out, wo), cache


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x).

    For a CPU, w1 x and w3 x are one matmul, x against the two weights stacked ([..., 2, hidden]
    out): XLA:CPU otherwise writes a transposed copy of each [tokens, hidden] gradient for the two
    weight gradients (bench_cpu_55m: 0.92x the step time, interleaved A/B, the same loss). The
    parameters stay w1 and w3, as checkpoints and converters hold them; stacked on a new leading
    axis, their "embed" / "mlp" sharding carries over unchanged (a concatenation along "mlp" would
    not). The two halves are split off (not indexed), so that their gradients are concatenated into
    the product's in one op, where indexing adds two zero-padded copies of it.

    Elsewhere they are two matmuls that read the weights where they are. Compiled for an H200 (no
    GPU needed: notes/hlo_bytes.py), the stack copied the decoder's bf16 w1 and w3 into a new array
    in every layer of every step, and again transposed for the backward pass: the two matmuls move
    50.1 GB a step less at configs/bench_gpu_real_shapes.py's shapes (1,429.2 -> 1,379.1 GB through
    the memory-bound ops, ~10 ms at the H200's 4.8 TB/s; not yet timed on a GPU)."""

    cfg: BackboneConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        w1 = _param(self, "w1", (c.dim, c.hidden_dim), ("embed", "mlp"), self.param_dtype)
        w3 = _param(self, "w3", (c.dim, c.hidden_dim), ("embed", "mlp"), self.param_dtype)
        w2 = _param(self, "w2", (c.hidden_dim, c.dim), ("mlp", "embed"), self.param_dtype)
        if traced_platform() == "cpu":
            up = jnp.einsum("...d,kdf->...kf", x, jnp.stack([w1, w3]).astype(self.dtype))
            gate, linear = (u.squeeze(-2) for u in jnp.split(up, 2, axis=-2))
        else:
            gate, linear = x @ w1.astype(self.dtype), x @ w3.astype(self.dtype)
        return (jax.nn.silu(gate) * linear) @ w2.astype(self.dtype)


class Block(nn.Module):
    """Pre-norm block. With `queries` given (a pooling layer), the residual stream is `queries`:
    attention reads queries from norm(queries) and keys/values from norm(h). With a `cache`
    (generation), attention reads and extends it, and (h, cache) is returned. With attention `rows`
    (training, arc_jax/model/attention_rows.py: those of h's slots, and `q_rows` those of the pooled
    queries) each text is attended alone."""

    cfg: BackboneConfig
    causal: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_impl: AttentionImpl = "xla"
    one_text_per_row: bool = False  # see attention.dot_product_attention
    span: int = 0  # see Attention

    @nn.compact
    def __call__(self, h, segment_ids, positions, queries=None, q_segment_ids=None, q_positions=None,
                 cache: KVCache | None = None, rows: AttentionRows | None = None, q_rows: AttentionRows | None = None):
        c = self.cfg
        attention_norm = Norm(c.norm_type, c.norm_eps, self.param_dtype, name="attention_norm")
        h_normed = attention_norm(h)
        same_sequence = queries is None
        if same_sequence:
            queries, q_normed, q_segment_ids, q_positions = h, h_normed, segment_ids, positions
        else:
            q_normed = attention_norm(queries)
        attention = Attention(c, self.causal, self.dtype, self.param_dtype, self.attention_impl,
                              one_text_per_row=self.one_text_per_row, span=self.span, name="attention")
        if rows is not None:
            rows = (rows if same_sequence else q_rows, rows)
        attended = attention(q_normed, h_normed, q_segment_ids, segment_ids, q_positions, positions, same_sequence,
                             cache=cache, rows=rows)
        if cache is not None:
            attended, cache = attended
        r = queries + attended
        ffn_norm = Norm(c.norm_type, c.norm_eps, self.param_dtype, name="ffn_norm")
        out = constrain_residual(r + FeedForward(c, self.dtype, self.param_dtype, name="feed_forward")(ffn_norm(r)))
        return out if cache is None else (out, cache)
