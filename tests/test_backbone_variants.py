"""The backbone's variants (q/k/v biases, per-head q/k RMSNorm, head_dim != dim / n_heads, tied
embeddings): the parameters each adds, one attention layer against a NumPy reference written
here, and tied logits read from the embedding table. Parity with transformers' Qwen2 and Qwen3
is in test_qwen_parity.py."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arc_jax.model import Decoder
from arc_jax.model.config import BackboneConfig
from arc_jax.model.layers import Attention

# head_dim 12 with dim 32 and 4 heads: not dim / n_heads, as in Qwen3.
BASE = BackboneConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12, hidden_dim=48, vocab_size=40,
                      rope_theta=1e6, norm_eps=1e-6)


def init_attention(cfg, seed=0):
    x = jnp.zeros((1, 3, cfg.dim))
    ids = jnp.ones((1, 3), jnp.int32)
    return nn.unbox(jax.jit(Attention(cfg, causal=True).init)(jax.random.key(seed), x, x, ids, ids, ids, ids)["params"])


def randomised(params, seed):
    """Every leaf redrawn (biases start at zeros, norm scales at ones: neither would show)."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [rng.normal(1.0, 0.5, np.shape(leaf)).astype(np.float32) for leaf in leaves])


def shapes(params):
    return {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_defaults_add_no_parameters():
    assert set(shapes(init_attention(BASE))) == {"['wq']", "['wk']", "['wv']", "['wo']"}


def test_each_option_adds_its_parameters():
    h, k, d = BASE.n_heads, BASE.n_kv_heads, BASE.head_dim
    biased = shapes(init_attention(dataclasses.replace(BASE, qkv_bias=True)))
    assert {n: s for n, s in biased.items() if n.startswith("['b")} == {"['bq']": (h, d), "['bk']": (k, d),
                                                                         "['bv']": (k, d)}
    normed = shapes(init_attention(dataclasses.replace(BASE, qk_norm=True)))
    assert {n: s for n, s in normed.items() if "norm" in n} == {"['q_norm']['scale']": (d,),
                                                                 "['k_norm']['scale']": (d,)}
    assert shapes(init_attention(BASE))["['wq']"] == (BASE.dim, h, d)


def numpy_attention(cfg, p, x, positions):
    """Causal GQA written out: project (+ bias), RMS-normalise each head (* scale), rotate pairs."""
    q, k, v = (np.einsum("td,dhk->thk", x, p[w]) for w in ("wq", "wk", "wv"))
    if cfg.qkv_bias:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
    if cfg.qk_norm:
        rms = lambda y: y / np.sqrt((y * y).mean(-1, keepdims=True) + cfg.norm_eps)
        q, k = rms(q) * p["q_norm"]["scale"], rms(k) * p["k_norm"]["scale"]
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)

    def rotate(y):
        z = (y[..., 0::2] + 1j * y[..., 1::2]) * np.exp(1j * positions[:, None, None] * inv)
        return np.stack([z.real, z.imag], -1).reshape(y.shape)

    q, k = rotate(q), rotate(k)
    group = cfg.n_heads // cfg.n_kv_heads
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    logits = np.einsum("thk,shk->hts", q, k) / np.sqrt(cfg.head_dim)
    logits = np.where(np.tril(np.ones((len(x), len(x)), bool)), logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("hts,shk,hkd->td", probs, v, p["wo"])


@pytest.mark.parametrize("options", [{}, {"qkv_bias": True}, {"qk_norm": True}, {"qkv_bias": True, "qk_norm": True}])
def test_attention_matches_numpy_reference(options):
    cfg = dataclasses.replace(BASE, **options)
    params = randomised(init_attention(cfg), seed=1)
    params = jax.tree.map(lambda w: w * 0.3, params)  # moderate logits: the softmax is not one-hot
    x = np.random.default_rng(2).normal(size=(5, cfg.dim)).astype(np.float32)
    positions = np.arange(5)
    ids = jnp.ones((1, 5), jnp.int32)
    pos = jnp.asarray(positions[None])
    ours = Attention(cfg, causal=True).apply({"params": params}, x[None], x[None], ids, ids, pos, pos)[0]
    expected = numpy_attention(cfg, jax.tree.map(np.asarray, params), x.astype(np.float64), positions)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=2e-5, rtol=1e-4)


def test_tied_decoder_reads_logits_from_the_embedding_table():
    cfg = dataclasses.replace(BASE, tie_embeddings=True)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
    ids, pos = jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(6), tokens.shape)
    params = nn.unbox(jax.jit(Decoder(cfg).init)(jax.random.key(0), tokens, ids, pos)["params"])
    assert "output" not in params
    untied = nn.unbox(jax.jit(Decoder(BASE).init)(jax.random.key(0), tokens, ids, pos)["params"])
    assert set(untied) - set(params) == {"output"}
    as_untied = {**params, "output": params["tok_embeddings"]["embedding"].T}
    np.testing.assert_allclose(np.asarray(Decoder(cfg).apply({"params": params}, tokens, ids, pos)),
                               np.asarray(Decoder(BASE).apply({"params": as_untied}, tokens, ids, pos)), atol=2e-5)


def test_configs_without_the_new_fields_read_as_before():
    old = {k: v for k, v in BASE.to_dict().items() if k not in ("qkv_bias", "qk_norm", "tie_embeddings")}
    assert BackboneConfig.from_dict(old) == BASE
    assert not (BASE.qkv_bias or BASE.qk_norm or BASE.tie_embeddings)


@pytest.mark.parametrize("tie", [False, True])
def test_bfloat16_logits_are_the_heads_bfloat16_output_and_its_backward_stays_bfloat16(tie):
    """As the reference's `output(h).float()`: the head's matmul is bfloat16 in and out, so its
    input gradient is a bfloat16 matmul too (float32 out would make it float32, a TF32 GEMM on GPUs)."""
    cfg = dataclasses.replace(BASE, tie_embeddings=tie)
    model = Decoder(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    tokens = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % cfg.vocab_size
    ids, pos = jnp.ones_like(tokens), jnp.tile(jnp.arange(8, dtype=jnp.int32), (2, 1))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, ids, pos)["params"])
    logits = model.apply({"params": params}, tokens, ids, pos)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(logits.astype(jnp.bfloat16).astype(jnp.float32) == logits))  # bfloat16 values

    def loss(p):
        return model.apply({"params": p}, tokens, ids, pos).sum()

    grad = jax.make_jaxpr(jax.grad(loss))(params)
    # The head's matmuls, forward and backward: those with a vocabulary-sized operand (outside the layers' scan).
    head = [e for e in grad.eqns if e.primitive.name == "dot_general"
            and any(cfg.vocab_size in v.aval.shape for v in e.invars)]
    assert len(head) >= 2 and all(v.aval.dtype == jnp.bfloat16 for e in head for v in e.invars)


def test_saving_the_attention_kernels_forward_runs_it_once_with_the_same_gradients():
    """remat_policy "dots_no_batch_attention" keeps the fused attention kernel's forward outputs:
    splash (the Pallas interpreter here; cuDNN's forward is kept the same way) runs its forward once
    where dots_no_batch runs it again in the backward pass, and the gradients do not change."""
    tokens = jnp.arange(32, dtype=jnp.int32).reshape(2, 16) % BASE.vocab_size
    ids, pos = jnp.ones_like(tokens), jnp.tile(jnp.arange(16, dtype=jnp.int32), (2, 1))
    params = nn.unbox(jax.jit(Decoder(BASE).init)(jax.random.key(0), tokens, ids, pos)["params"])

    def grad_of(policy):
        model = Decoder(BASE, attention_impl="splash", remat_policy=policy)
        grad = jax.grad(lambda p: model.apply({"params": p}, tokens, ids, pos).sum())
        return str(jax.make_jaxpr(grad)(params)).count("pallas_call"), grad(params)

    (dots_kernels, dots), (kept_kernels, kept) = map(grad_of, ["dots_no_batch", "dots_no_batch_attention"])
    assert kept_kernels == dots_kernels - 1  # forward, dq and dkv kernels: no second forward
    for x, y in zip(jax.tree.leaves(dots), jax.tree.leaves(kept), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
