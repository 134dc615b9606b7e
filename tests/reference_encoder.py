"""Test helper: an independent float64 numpy ARC encoder written from what the paper and the
reference code do (backbone, pooling, special vectors), not from arc_jax, and random
released-layout checkpoints (config.json + Meta-named weights) to feed it and arc_jax.

Independent on purpose: nothing from arc_jax is imported here, so a shared mistake cannot hide.
The encoder processes one text at a time (no packing) with plain loops over heads and groups.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# ---- random released checkpoints ------------------------------------------------------------


def make_config(*, dim=32, n_layers=5, n_truncated_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, hidden_dim=48,
                vocab_size=64, rope_theta=10000.0, norm_eps="1e-05", compress_rates=(-8,),
                pool_type="mean_pooled_queries", where="before", causal=False, memory_tokens=0, rec_tok=True,
                cont_tok=True, n_decoders=1, bridge_hidden=24, out_dim=40, qkv_bias=False, qk_norm=False) -> dict:
    """A released config.json as the hub mixin writes it (norm_eps a string, llms and embedder).
    qkv_bias / qk_norm (Qwen2 / Qwen3 backbones, which no released encoder has) are recorded in
    model_args only when set."""
    return {
        "bridge_args": {"bridge_type": "mlp" if n_decoders == 1 else "multi_module", "in_dim": dim,
                        "hidden_dim": bridge_hidden, "out_dim": out_dim},
        "model_args": {"dim": dim, "n_layers": n_layers, "head_dim": head_dim, "hidden_dim": hidden_dim,
                       "n_heads": n_heads, "n_kv_heads": n_kv_heads, "norm_eps": norm_eps, "vocab_size": vocab_size,
                       "rope_theta": rope_theta, "max_batch_size": 4,
                       **({"qkv_bias": True} if qkv_bias else {}), **({"qk_norm": True} if qk_norm else {})},
        "embedder_args": {"n_truncated_layers": n_truncated_layers, "compress_rates": list(compress_rates),
                          "pooling_module": {"pool_type": pool_type, "where": where},
                          "causal_embedder": causal, "rec_tok": rec_tok, "cont_tok": cont_tok,
                          "memory_tokens": memory_tokens, "trained_layers": n_layers - n_truncated_layers,
                          "train_embedding_mtx": True},
        "llms": [],
        "embedder": None,
        **({"empty_init": n_decoders} if n_decoders > 1 else {}),
    }


def n_decoders_of(config: dict) -> int:
    return config.get("empty_init", 1) if config["bridge_args"]["bridge_type"] == "multi_module" else 1


def bridge_name(config: dict, d: int, layer: str) -> str:
    multi = config["bridge_args"]["bridge_type"] == "multi_module"
    return f"bridge_module.{d}.{layer}.weight" if multi else f"bridge_module.{layer}.weight"


def random_weights(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Released tensor names -> float32 arrays scaled so activations stay of order one."""
    rng = np.random.default_rng(seed)
    m, e, b = config["model_args"], config["embedder_args"], config["bridge_args"]
    d, hd, f = m["dim"], m["head_dim"], m["hidden_dim"]
    normal = lambda *shape, scale=1.0: (rng.standard_normal(shape) * scale).astype(np.float32)
    w = {"embedder.tok_embeddings.weight": normal(m["vocab_size"], d)}
    for i in range(m["n_layers"] - e["n_truncated_layers"]):
        p = f"embedder.layers.{i}."
        w[p + "attention.wq.weight"] = normal(m["n_heads"] * hd, d, scale=d ** -0.5)
        w[p + "attention.wk.weight"] = normal(m["n_kv_heads"] * hd, d, scale=d ** -0.5)
        w[p + "attention.wv.weight"] = normal(m["n_kv_heads"] * hd, d, scale=d ** -0.5)
        w[p + "attention.wo.weight"] = normal(d, m["n_heads"] * hd, scale=(m["n_heads"] * hd) ** -0.5)
        w[p + "feed_forward.w1.weight"] = normal(f, d, scale=d ** -0.5)
        w[p + "feed_forward.w3.weight"] = normal(f, d, scale=d ** -0.5)
        w[p + "feed_forward.w2.weight"] = normal(d, f, scale=f ** -0.5)
        w[p + "attention_norm.weight"] = 1 + normal(d, scale=0.1)
        w[p + "ffn_norm.weight"] = 1 + normal(d, scale=0.1)
        if m.get("qkv_bias"):
            for name, heads in (("wq", m["n_heads"]), ("wk", m["n_kv_heads"]), ("wv", m["n_kv_heads"])):
                w[p + f"attention.{name}.bias"] = normal(heads * hd, scale=0.5)
        if m.get("qk_norm"):
            for name in ("q_norm", "k_norm"):
                w[p + f"attention.{name}.weight"] = 1 + normal(hd, scale=0.3)
    if e["memory_tokens"]:
        w["embedder.mem_embeddings.0.weight"] = normal(e["memory_tokens"], d)
    for k in range(n_decoders_of(config)):
        for name in ("rec_tok", "cont_tok"):
            if e[name]:
                w[f"embedder.{name}.{k}.weight"] = 1 + normal(1, d, scale=0.5)
        w[bridge_name(config, k, "layer1")] = normal(b["hidden_dim"], b["in_dim"], scale=b["in_dim"] ** -0.5)
        w[bridge_name(config, k, "layer2")] = normal(b["out_dim"], b["hidden_dim"], scale=b["hidden_dim"] ** -0.5)
    return w


def write_released(folder: Path, config: dict, weights: dict[str, np.ndarray], bfloat16: bool = False) -> Path:
    """A released folder written with the safetensors library (not arc_jax's writer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if bfloat16:
        import safetensors.torch
        import torch

        safetensors.torch.save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in weights.items()},
                                    str(folder / "model.safetensors"))
    else:
        import safetensors.numpy

        safetensors.numpy.save_file(weights, str(folder / "model.safetensors"))
    return folder


# ---- the encoder ------------------------------------------------------------------------------


def group_sizes(n: int, k: int) -> list[int]:
    """The reference's pooling groups: one group if n < k; n/k groups of k if k divides n; else
    n//k + 1 near-equal groups, larger first (np.array_split puts the remainder in the first parts)."""
    if n < k:
        return [n]
    if n % k == 0:
        return [k] * (n // k)
    return [len(part) for part in np.array_split(np.arange(n), n // k + 1)]


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x, positions, theta):
    """Meta convention: channel pairs (0,1), (2,3), ... rotated as complex numbers; x [t, heads, d]."""
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    angle = np.exp(1j * np.outer(positions, freqs))[:, None, :]
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * angle
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def attention(w, p, xq, xkv, q_pos, kv_pos, m, causal):
    """Grouped-query attention, one head at a time; causal masks keys with position > query's."""
    n_heads, n_kv, hd = m["n_heads"], m["n_kv_heads"], m["head_dim"]

    def project(x, name, heads):
        """x @ W.T (+ bias: Qwen2), one row per head (RMS-normalised with a scale: Qwen3 q and k)."""
        y = x @ w[p + f"attention.{name}.weight"].T + w.get(p + f"attention.{name}.bias", 0.0)
        y = y.reshape(len(x), heads, hd)
        norm = {"wq": "q_norm", "wk": "k_norm"}.get(name)
        if norm and p + f"attention.{norm}.weight" in w:
            y = rms_norm(y, w[p + f"attention.{norm}.weight"], float(m["norm_eps"]))
        return y

    q = rope(project(xq, "wq", n_heads), q_pos, m["rope_theta"])
    k = rope(project(xkv, "wk", n_kv), kv_pos, m["rope_theta"])
    v = project(xkv, "wv", n_kv)
    heads = []
    for h in range(n_heads):
        g = h // (n_heads // n_kv)
        scores = q[:, h] @ k[:, g].T / np.sqrt(hd)
        if causal is not None:
            scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        heads.append(probs @ v[:, g])
    return np.concatenate(heads, axis=-1) @ w[p + "attention.wo.weight"].T


def block(w, i, h, q_in, q_pos, kv_pos, m, causal_mask):
    """Pre-norm block whose residual stream is q_in (h itself outside pooling layers)."""
    p = f"embedder.layers.{i}."
    eps = float(m["norm_eps"])
    h_norm = rms_norm(h, w[p + "attention_norm.weight"], eps)
    q_norm = rms_norm(q_in, w[p + "attention_norm.weight"], eps)
    r = q_in + attention(w, p, q_norm, h_norm, q_pos, kv_pos, m, causal_mask)
    x = rms_norm(r, w[p + "ffn_norm.weight"], eps)
    silu = lambda a: a / (1 + np.exp(-a))
    ffn = (silu(x @ w[p + "feed_forward.w1.weight"].T) * (x @ w[p + "feed_forward.w3.weight"].T))
    return r + ffn @ w[p + "feed_forward.w2.weight"].T


def encode(weights, config, tokens, *, pooled_query_positions="index", causal_pool_mask="top_left"):
    """Encoder output [m, dim] of one text. The two keyword options select deliberately WRONG
    variants (pooled queries at their group's first position; causal pooled queries seeing their
    whole group) so tests can show that parity would catch them."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    m, e = config["model_args"], config["embedder_args"]
    n_layers = m["n_layers"] - e["n_truncated_layers"]
    rates = e["compress_rates"]
    mean = e["pooling_module"]["pool_type"].startswith("mean")
    causal = e["causal_embedder"]
    h = w["embedder.tok_embeddings.weight"][np.asarray(tokens)]
    n_text = len(h)
    if e["memory_tokens"]:  # appended after the text, positions continuing from n
        h = np.concatenate([h, w["embedder.mem_embeddings.0.weight"]])
    pos = np.arange(len(h))
    first_pool = n_layers - len(rates)
    for i in range(n_layers):
        if i < first_pool:
            mask = (pos[None, :] <= pos[:, None]) if causal else None
            h = block(w, i, h, h, pos, pos, m, mask)
            continue
        sizes = group_sizes(len(h), -rates[i - first_pool])
        ends = np.cumsum(sizes)
        starts = ends - sizes
        q_in = np.stack([h[s:t].mean(0) if mean else h[t - 1] for s, t in zip(starts, ends)])
        q_pos = np.arange(len(sizes)) if pooled_query_positions == "index" else pos[starts]
        mask = None
        if causal:  # top-left: pooled query k sees keys 0..k
            limit = np.arange(len(sizes)) if causal_pool_mask == "top_left" else ends - 1
            mask = pos[None, :] <= limit[:, None]
        h = block(w, i, h, q_in, q_pos, pos, m, mask)
        pos = np.arange(len(sizes))
    return h[n_text:] if e["memory_tokens"] else h


def compress(weights, config, tokens, decoder=0, special="cont", **options):
    """Decoder-space vectors of one text: project(concat(encode(text), <Cont> or <Rec>))."""
    x = encode(weights, config, tokens, **options)
    if special is not None:
        x = np.concatenate([x, np.asarray(weights[f"embedder.{special}_tok.{decoder}.weight"], np.float64)])
    layer1 = np.asarray(weights[bridge_name(config, decoder, "layer1")], np.float64)
    layer2 = np.asarray(weights[bridge_name(config, decoder, "layer2")], np.float64)
    return x @ layer1.T @ layer2.T
