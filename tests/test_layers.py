"""Building blocks checked against independent references."""

import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.model.attention import dot_product_attention
from arc_jax.model.config import RopeScaling
from arc_jax.model.layers import apply_rope, rope_frequencies


def test_llama31_rope_scaling_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    ours = rope_frequencies(128, 500000.0, RopeScaling())
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)
    assert not np.allclose(ours, rope_frequencies(128, 500000.0, None))  # scaling does something


def test_rope_rotates_consecutive_pairs_as_complex_numbers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 3, 2, 8)).astype(np.float32)
    pos = np.array([[0, 5, 17]])
    inv = rope_frequencies(8, 10000.0, None)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    rotated = z * np.exp(1j * pos[..., None, None] * inv)
    expected = np.stack([rotated.real, rotated.imag], -1).reshape(x.shape)
    np.testing.assert_allclose(apply_rope(jnp.asarray(x), jnp.asarray(pos), inv), expected, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_implementations_agree_and_padding_stays_finite(causal):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 6, 4, 8)).astype(np.float32)
    k = rng.normal(size=(2, 6, 2, 8)).astype(np.float32)
    v = rng.normal(size=(2, 6, 2, 8)).astype(np.float32)
    seg = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    pos = np.array([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])
    kw = dict(q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos, kv_positions=pos, causal=causal)
    xla = np.asarray(dot_product_attention(q, k, v, implementation="xla", **kw))
    fused = np.asarray(dot_product_attention(q, k, v, implementation="jax_nn", **kw))
    assert np.isfinite(xla).all()
    real = seg > 0
    np.testing.assert_allclose(fused[real], xla[real], atol=1e-5)
    # Token 0 of segment 2 in row 0 sees only itself when causal: its output is its own value.
    if causal:
        np.testing.assert_allclose(xla[0, 3], np.repeat(v[0, 3], 2, axis=0), atol=1e-6)


def _one_text_rows(lengths, width):
    seg = np.array([[1] * n + [0] * (width - n) for n in lengths], np.int32)
    return seg, np.where(seg > 0, np.arange(width), 0).astype(np.int32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_lengths,t", [((5, 2, 0), 6), ((3, 1, 0), 4)])  # itself; pooled queries
def test_one_text_per_row_attends_by_lengths_like_the_segment_masks(monkeypatch, causal, q_lengths, t):
    """Rows holding one text each, padded at their end (an empty padding row too): "jax_nn" then
    passes two lengths per row instead of a boolean mask (which cuDNN would turn into a dense
    bias); the result equals the segment-mask path on every real query."""
    import jax

    from arc_jax.model import attention

    rng = np.random.default_rng(3)
    q = rng.normal(size=(3, t, 4, 8)).astype(np.float32)
    k, v = (rng.normal(size=(3, 6, 2, 8)).astype(np.float32) for _ in range(2))
    q_seg, q_pos = _one_text_rows(q_lengths, t)
    kv_seg, kv_pos = _one_text_rows((5, 2, 0), 6)
    kw = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_positions=q_pos, kv_positions=kv_pos, causal=causal)
    calls = []
    real_attention = jax.nn.dot_product_attention
    monkeypatch.setattr(attention.jax.nn, "dot_product_attention",
                        lambda *a, **k: calls.append(k) or real_attention(*a, **k))
    by_lengths = np.asarray(dot_product_attention(q, k, v, implementation="jax_nn", one_text_per_row=True, **kw))
    (call,) = calls
    assert call.get("mask") is None and call["key_value_seq_lengths"].tolist() == [5, 2, 1]  # 0 -> 1: no NaN
    assert call["query_seq_lengths"].tolist() == [max(n, 1) for n in q_lengths]
    assert np.isfinite(by_lengths).all()
    by_segments = np.asarray(dot_product_attention(q, k, v, implementation="xla", **kw))
    real = q_seg > 0
    np.testing.assert_allclose(by_lengths[real], by_segments[real], atol=1e-6)
    # Other implementations ignore the hint: their masks already cost nothing extra.
    np.testing.assert_array_equal(
        np.asarray(dot_product_attention(q, k, v, implementation="xla", one_text_per_row=True, **kw)), by_segments)


def _packed_rows(t):
    seg = np.ones((2, t), np.int32)
    seg[0, 50:], seg[0, 120:], seg[1, 100:] = 2, 0, 0
    pos = np.zeros_like(seg)
    for r in range(2):
        for i in range(1, t):
            pos[r, i] = 0 if seg[r, i] != seg[r, i - 1] else pos[r, i - 1] + 1
    return seg, pos


@pytest.mark.parametrize("causal, t", [(False, 128), (True, 128), (True, 200)])
def test_splash_kernel_matches_the_reference_with_gradients(causal, t):
    # Runs the TPU kernel through the Pallas interpreter: same masking, same values, same grads. A row
    # of 200 slots is padded to the kernel's 256 inside the attention.
    import jax

    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=(2, t, n, 16)).astype(np.float32) for n in (4, 2, 2))
    seg, pos = _packed_rows(t)
    real = jnp.asarray(seg > 0)[:, :, None, None]

    def loss(impl, q, k, v):
        out = dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                    kv_positions=pos, causal=causal, implementation=impl, same_sequence=True)
        return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), out

    # Jitted: op by op, the interpreted kernel took 10-27 s a case.
    (ref_loss, ref_out), ref_grads = jax.jit(jax.value_and_grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2),
                                                                has_aux=True))(q, k, v)
    (spl_loss, spl_out), spl_grads = jax.jit(jax.value_and_grad(lambda *a: loss("splash", *a), argnums=(0, 1, 2),
                                                                has_aux=True))(q, k, v)
    np.testing.assert_allclose(np.asarray(spl_out)[seg > 0], np.asarray(ref_out)[seg > 0], atol=2e-5)
    assert np.isfinite(np.asarray(spl_out)).all()  # t=200: row 1's second block is padding only, skipped
    for a, b in zip(spl_grads, ref_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    assert "pallas_call" in str(jax.make_jaxpr(lambda *a: loss("splash", *a))(q, k, v))  # the kernel ran


def _rows_of_texts(t, *rows):
    seg, pos = np.zeros((len(rows), t), np.int32), np.zeros((len(rows), t), np.int32)
    for r, lengths in enumerate(rows):
        start = 0
        for i, n in enumerate(lengths):
            seg[r, start:start + n], pos[r, start:start + n] = i + 1, np.arange(n)
            start += n
    return seg, pos


@pytest.mark.parametrize("lengths, t, causal, blocks", [
    ((128, 128, 128, 128), 512, True, 4),  # four texts on four blocks: the diagonal only
    ((128, 128, 128, 128), 512, False, 4),
    ((200, 312), 512, True, 8),  # text 1 on blocks 0-1 (3 pairs), text 2 on 1-3 (6), (1, 1) shared
    ((200, 312), 512, False, 12),  # 2x2 + 3x3 - 1
    ((300,), 300, True, 6),  # padded to 384: the third block is partly padding, the triangle of 3
])
def test_splash_blocks_counts_the_blocks_holding_an_allowed_pair_by_hand(lengths, t, causal, blocks):
    from arc_jax.model.attention import splash_blocks

    seg, pos = _rows_of_texts(t, lengths)
    assert splash_blocks(seg, pos, causal) == blocks


def test_splash_blocks_agrees_with_the_dense_mask_on_random_packings():
    from arc_jax.model.attention import attention_mask, splash_blocks

    rng = np.random.default_rng(5)
    for causal in (False, True):
        rows = [tuple(rng.integers(1, 200, size=rng.integers(1, 6))) for _ in range(6)]
        rows = [tuple(n for n in r if n) for r in rows]
        t = max(sum(r) for r in rows)
        seg, pos = _rows_of_texts(t, *rows)
        pad = -t % 128
        mask = np.asarray(attention_mask(np.pad(seg, [(0, 0), (0, pad)]), np.pad(seg, [(0, 0), (0, pad)]),
                                         np.pad(pos, [(0, 0), (0, pad)]), np.pad(pos, [(0, 0), (0, pad)]), causal))
        n = (t + pad) // 128
        assert splash_blocks(seg, pos, causal) == int(mask.reshape(len(rows), n, 128, n, 128).any(axis=(2, 4)).sum())


def test_splash_skips_blocks_across_texts_with_the_reference_values_and_gradients():
    """Three texts of 100 slots and 212 of padding on 512 slots: 5 of the causal triangle's 10 blocks
    hold an allowed pair (each text's, the second and third straddling two blocks), the last query
    block is padding only; values and gradients are the "xla" path's, and every output is finite."""
    import jax

    from arc_jax.model.attention import splash_blocks

    seg, pos = _rows_of_texts(512, (100, 100, 100))
    assert splash_blocks(seg, pos, True) == 5
    rng = np.random.default_rng(7)
    q, k, v = (rng.normal(size=(1, 512, n, 16)).astype(np.float32) for n in (2, 1, 1))
    real = jnp.asarray(seg > 0)[:, :, None, None]

    def loss(impl, q, k, v):
        out = dot_product_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, q_positions=pos,
                                    kv_positions=pos, causal=True, implementation=impl, same_sequence=True)
        return jnp.sum(jnp.where(real, jnp.sin(out), 0.0)), out

    (_, ref_out), ref_grads = jax.jit(jax.value_and_grad(lambda *a: loss("xla", *a), (0, 1, 2), has_aux=True))(q, k, v)
    (_, out), grads = jax.jit(jax.value_and_grad(lambda *a: loss("splash", *a), (0, 1, 2), has_aux=True))(q, k, v)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.asarray(out)[seg > 0], np.asarray(ref_out)[seg > 0], atol=2e-5)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def _fusions_computing(hlo: str, op: str) -> list[int]:
    """Output bytes of the fused computations of compiled HLO text that contain `op` (a computation's
    root is printed last)."""
    from arc_jax.tools.hlo_collectives import array_bytes, parse_module

    computations, entry = parse_module(hlo)
    return [sum(array_bytes(body[-1].type)) for name, body in computations.items()
            if name != entry and any(ins.op == op for ins in body)]


def test_rope_computes_each_rotation_once_not_per_head_element():
    """XLA:CPU would fuse cos and sin into the ops that rotate q and k (and their gradients), computing
    them again for every head's element: the compiled forward and backward computes them only on
    tables of [rows, slots, head_dim / 2] (README, Benchmark: 10.4 ms against 1.6 ms for bench_cpu_55m's
    decoder q)."""
    import jax

    b, t, heads, d = 2, 16, 8, 32
    x = jnp.asarray(np.random.default_rng(0).normal(size=(b, t, heads, d)).astype(np.float32))
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    inv = rope_frequencies(d, 10000.0, None)
    hlo = jax.jit(jax.grad(lambda x, pos: jnp.sum(apply_rope(x, pos, inv) ** 3))).lower(x, pos).compile().as_text()
    for op in ("cosine", "sine"):
        sizes = _fusions_computing(hlo, op)
        assert sizes and max(sizes) <= 4 * 2 * b * t * d // 2, (op, sizes)  # float32 [2, b * t, d / 2]


_ROPE_ON_A_MESH = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from arc_jax.model.layers import apply_rope, rope_frequencies
mesh = Mesh(np.array(jax.devices()), ("data",))
rows = NamedSharding(mesh, P("data"))
x = jnp.ones((4, 16, 2, 32)); pos = jnp.broadcast_to(jnp.arange(16), (4, 16))
inv = rope_frequencies(32, 10000.0, None)
f = jax.jit(jax.grad(lambda x, pos: jnp.sum(apply_rope(x, pos, inv) ** 3)), in_shardings=(rows, rows),
            out_shardings=rows)
hlo = f.lower(x, pos).compile().as_text()
print(jax.device_count(), sum(op in hlo for op in ("all-gather", "all-to-all", "all-reduce", "collective-permute")))
"""


def _on_two_cpu_devices(script: str) -> list[str]:
    """The words `script` prints, run by a Python of its own on two fake CPU devices."""
    import os
    import subprocess
    import sys

    from xla_flags import with_devices

    env = {**os.environ, "XLA_FLAGS": with_devices(2), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_rope_tables_of_rows_split_over_devices_need_no_collective():
    """The rows of a batch split over two devices (data parallel): each device computes the cos and
    sin of its own rows. An identity gather over the flattened [rows * slots] table had made XLA
    gather every row's table onto every device (an all-gather in every layer of the step)."""
    assert _on_two_cpu_devices(_ROPE_ON_A_MESH) == ["2", "0"]


def test_swiglu_gradient_joins_its_halves_without_padded_copies():
    """The gradient of the stacked w1 x / w3 x product is one concatenation of the two halves'
    (jnp.split), not the sum of two zero-padded copies (indexing), in the program jax hands XLA."""
    import flax.linen as nn
    import jax

    from arc_jax.model.config import BackboneConfig
    from arc_jax.model.layers import FeedForward

    cfg = BackboneConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8, hidden_dim=24, vocab_size=8)
    ff = FeedForward(cfg)
    x = jnp.ones((4, 16))
    params = nn.unbox(ff.init(jax.random.key(0), x)["params"])
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(ff.apply({"params": p}, x) ** 2), argnums=(0, 1)))
    hlo = grad.lower(params, x).as_text()  # before XLA's passes: the program jax writes
    assert "stablehlo.concatenate" in hlo and "stablehlo.pad" not in hlo


def test_swiglu_off_the_cpu_is_two_matmuls_with_the_stacked_ones_outputs_and_gradients(monkeypatch):
    """Traced for another platform, w1 x and w3 x are two matmuls on the weights as they are (no
    stacked copy of them): the same outputs and gradients as the CPU's stacked product (float32)."""
    import flax.linen as nn
    import jax

    from arc_jax.model import layers
    from arc_jax.model.config import BackboneConfig

    cfg = BackboneConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8, hidden_dim=24, vocab_size=8)
    ff = layers.FeedForward(cfg)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16)), jnp.float32)
    params = nn.unbox(ff.init(jax.random.key(0), x)["params"])
    loss = lambda p, x: jnp.sum(ff.apply({"params": p}, x) ** 2)  # noqa: E731
    stacked = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
    assert "concatenate" in str(jax.make_jaxpr(jax.grad(loss))(params, x))
    monkeypatch.setattr(layers, "traced_platform", lambda: "gpu")
    two = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
    assert "concatenate" not in str(jax.make_jaxpr(jax.grad(loss))(params, x))
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(stacked), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_norm_scale_by_matmul_gradient_equals_the_products_autodiff():
    """The RMSNorm scale's product with a matmul for its gradient: its value and gradients (for y and
    scale) are jax's own autodiff of y * scale."""
    import jax

    from arc_jax.model.layers import _scaled_by_matmul_gradient

    rng = np.random.default_rng(0)
    y, g = (jnp.asarray(rng.normal(size=(3, 5, 16)).astype(np.float32)) for _ in range(2))
    scale = jnp.asarray(rng.normal(size=16).astype(np.float32))
    out, vjp = jax.vjp(_scaled_by_matmul_gradient, y, scale)
    expected, expected_vjp = jax.vjp(lambda y, s: y * s, y, scale)
    np.testing.assert_array_equal(out, expected)
    for got, want in zip(vjp(g), expected_vjp(g)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


_NORM_SCALE_GRADIENT = """
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from jax.sharding import Mesh
from arc_jax.model.layers import Norm
norm = Norm("rmsnorm", 1e-5)
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 16)).astype(np.float32))
params = nn.unbox(norm.init(jax.random.key(0), x)["params"])
loss = lambda p, x: jnp.sum(norm.apply({"params": p}, x) ** 2)
counts = []
for devices in (jax.devices()[:1], jax.devices()):
    with jax.sharding.use_abstract_mesh(Mesh(np.array(devices), ("data",)).abstract_mesh):
        grad = jax.jit(jax.grad(loss)).lower(params, x).as_text()
    counts.append(grad.count("stablehlo.dot_general"))
print(jax.device_count(), *counts)
"""


def test_norm_scale_gradient_is_a_matmul_on_one_cpu_device_only():
    """Traced for one CPU device, the scale's gradient is a matmul (XLA:CPU's strided loop for the
    reduction is slow there); for two, a reduction (there the matmuls made the demo's steps slower:
    README, Benchmark)."""
    assert _on_two_cpu_devices(_NORM_SCALE_GRADIENT) == ["2", "1", "0"]
