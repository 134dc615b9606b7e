"""cuDNN flash attention ("jax_nn" on a GPU in bfloat16) against the plain XLA path in float32.

The last test runs the attention rows (arc_jax/model/attention_rows.py) on cuDNN, gradients included.

Runs only where JAX uses a GPU, so skipped on the CPU CI and by default everywhere (conftest.py
sets JAX_PLATFORMS=cpu unless it is set): `JAX_PLATFORMS=cuda python -m pytest -n 0
tests/test_attention_gpu.py` (launch/gpu_bench.sh does). Each check also asserts that the compiled
program really calls cuDNN's fused attention, so a silent fallback to XLA cannot pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.model.attention import causal_prompt_attention, dot_product_attention

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (cuDNN)")
BF16_ATOL = 3e-2  # bf16 inputs and outputs, float32 accumulation


def _qkv(rng, b, t, s, heads=8, kv_heads=2, d=64):
    def draw(n, h):
        return rng.normal(size=(b, n, h, d)).astype(np.float32)
    return draw(t, heads), draw(s, kv_heads), draw(s, kv_heads)


def _calls_cudnn(fn, *args) -> bool:
    return "cudnn" in jax.jit(fn).lower(*args).compile().as_text().lower()


@pytest.mark.parametrize("causal", [False, True])
def test_packed_segments_match_xla(causal):
    rng = np.random.default_rng(0)
    t = 256
    q, k, v = _qkv(rng, 2, t, t)
    seg = np.ones((2, t), np.int32)
    seg[0, 100:], seg[0, 200:], seg[1, 180:] = 2, 0, 0
    pos = np.concatenate([np.arange(100), np.arange(100), np.zeros(56)]).astype(np.int32)
    pos = np.stack([pos, np.where(np.arange(t) < 180, np.arange(t), 0)]).astype(np.int32)
    kw = dict(q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos, kv_positions=pos, causal=causal)

    def fused(q, k, v):
        return dot_product_attention(q, k, v, implementation="jax_nn", **kw)

    bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    assert _calls_cudnn(fused, *bf16)
    got = np.asarray(fused(*bf16), np.float32)
    want = np.asarray(dot_product_attention(q, k, v, implementation="xla", **kw))
    real = seg > 0
    np.testing.assert_allclose(got[real], want[real], atol=BF16_ATOL)


def test_pooled_queries_match_xla():
    # A pooling layer: 64 queries (positions 0..63) against 256 keys, bidirectional.
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 1, 64, 256)
    kw = dict(q_segment_ids=np.ones((1, 64), np.int32), kv_segment_ids=np.ones((1, 256), np.int32),
              q_positions=np.arange(64)[None], kv_positions=np.arange(256)[None], causal=False)

    def fused(q, k, v):
        return dot_product_attention(q, k, v, implementation="jax_nn", **kw)

    bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    assert _calls_cudnn(fused, *bf16)
    np.testing.assert_allclose(np.asarray(fused(*bf16), np.float32),
                               np.asarray(dot_product_attention(q, k, v, implementation="xla", **kw)), atol=BF16_ATOL)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t", [256, 64])  # a plain encoder layer; a pooling layer's queries
def test_one_text_per_row_lengths_match_xla(causal, t):
    # Rows of one text each (256 slots: texts of 256, 190 and 0 tokens), masked by lengths.
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, 3, t, 256)
    kv_seg = (np.arange(256)[None] < np.array([[256], [190], [0]])).astype(np.int32)
    q_seg = (np.arange(t)[None] < np.array([[t], [(190 * t) // 256], [0]])).astype(np.int32)
    kw = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_positions=np.where(q_seg, np.arange(t), 0),
              kv_positions=np.where(kv_seg, np.arange(256), 0), causal=causal)

    def fused(q, k, v):
        return dot_product_attention(q, k, v, implementation="jax_nn", one_text_per_row=True, **kw)

    bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    assert _calls_cudnn(fused, *bf16)
    got = np.asarray(fused(*bf16), np.float32)
    want = np.asarray(dot_product_attention(q, k, v, implementation="xla", **kw))
    assert np.isfinite(got).all()
    real = q_seg > 0
    np.testing.assert_allclose(got[real], want[real], atol=BF16_ATOL)


def test_causal_prompt_matches_xla():
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, 2, 320, 320, heads=32, kv_heads=8, d=128)
    bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]

    def fused(q, k, v):
        return causal_prompt_attention(q, k, v, "jax_nn")

    assert _calls_cudnn(fused, *bf16)
    np.testing.assert_allclose(np.asarray(fused(*bf16), np.float32),
                               np.asarray(causal_prompt_attention(q, k, v, "xla")), atol=BF16_ATOL)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_rows_match_the_packed_rows_with_gradients(causal):
    """Texts packed two rows of 512 slots, attended in attention rows of 128 and 256 (cuDNN by lengths,
    each row's padding left to the kernel), against XLA over the packed rows in float32: outputs and
    the gradients of q, k and v (the gathers' backward must add nothing from the padding)."""
    from arc_jax.model.attention_rows import Allocator, layout

    texts = [[100, 256, 60, 90], [200, 128, 40, 120]]
    spec = ((4, 128), (4, 256))
    seg = np.zeros((2, 512), np.int32)
    pos = np.zeros_like(seg)
    alloc, places = Allocator(spec, groups=1, group_rows=2), {}
    for r, lengths in enumerate(texts):
        start = 0
        for i, n in enumerate(lengths, start=1):
            seg[r, start:start + n], pos[r, start:start + n] = i, np.arange(n)
            places[(r, i)] = alloc.take(r, n)
            start += n
    rows = layout(seg, places, spec, [n for _, n in spec], groups=1)
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 2, 512, 512)
    cot = rng.normal(size=q.shape).astype(np.float32) * (seg > 0)[..., None, None]
    kw = dict(q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos, kv_positions=pos, causal=causal,
              same_sequence=True)

    def loss(q, k, v, implementation, rows):
        out = dot_product_attention(q, k, v, implementation=implementation, rows=rows, **kw)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    def fused(q, k, v):
        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, "jax_nn", (rows, rows))

    bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    assert _calls_cudnn(fused, *bf16)
    (_, got), got_grads = fused(*bf16)
    (_, want), want_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, "xla", None)
    real = seg > 0
    np.testing.assert_allclose(np.asarray(got, np.float32)[real], np.asarray(want)[real], atol=BF16_ATOL)
    assert not np.asarray(got, np.float32)[~real].any()  # packed padding reads zeros
    for name, a, b in zip("qkv", got_grads, want_grads):
        a, b = np.asarray(a, np.float32), np.asarray(b)
        assert np.isfinite(a).all(), name
        np.testing.assert_allclose(a, b, atol=BF16_ATOL * max(1.0, np.abs(b).max()), err_msg=name)
