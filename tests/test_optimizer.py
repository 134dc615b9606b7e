"""The optimiser against torch (AdamW + OneCycleLR + clip_grad_norm_) and multi-decoder isolation."""

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.train import optimizer
from arc_jax.train.optimizer import OptimizerConfig

CFG = OptimizerConfig(encoder_lr=1e-2, special_lr=3e-2, projector_lr=5e-2, weight_decay=0.1, warmup_steps=2,
                      max_steps=8, initial_lr=1e-3, final_lr=1e-4, clip_norm=1.0)


def tree(rng, n_decoders=1):
    t = {"layers": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
         "tok_embeddings": {"embedding": rng.normal(size=(5, 4)).astype(np.float32)}}
    for d in range(n_decoders):
        t[f"decoder_{d}"] = {"rec_tok": rng.normal(size=4).astype(np.float32),
                             "cont_tok": rng.normal(size=4).astype(np.float32),
                             "layer1": rng.normal(size=(4, 2)).astype(np.float32),
                             "layer2": rng.normal(size=(2, 3)).astype(np.float32)}
    return t


def torch_reference(params, grads_per_step, cfg):
    import torch

    names = list(jax.tree_util.tree_flatten_with_path(params)[0])
    tensors = {jax.tree_util.keystr(p): torch.nn.Parameter(torch.tensor(np.array(v))) for p, v in names}
    lr_of = lambda key: cfg.special_lr if ("rec_tok" in key or "cont_tok" in key) else (
        cfg.projector_lr if "layer" in key and "decoder" in key else cfg.encoder_lr)
    opt = torch.optim.AdamW([{"params": [t], "lr": lr_of(k)} for k, t in tensors.items()],
                            weight_decay=cfg.weight_decay, betas=(cfg.b1, cfg.b2), eps=cfg.eps)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr_of(k) for k in tensors], total_steps=cfg.max_steps,
        pct_start=cfg.warmup_steps / cfg.max_steps, anneal_strategy="cos", cycle_momentum=False,
        div_factor=cfg.encoder_lr / cfg.initial_lr, final_div_factor=cfg.encoder_lr / cfg.final_lr)
    for grads in grads_per_step:
        flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
        for k, t in tensors.items():
            t.grad = torch.tensor(np.array(flat[k]))
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), cfg.clip_norm)
        opt.step()
        sched.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def test_single_decoder_steps_match_torch_adamw_one_cycle_and_clipping():
    rng = np.random.default_rng(0)
    params = tree(rng)
    grads = [jax.tree.map(lambda x, s=s: (rng.normal(size=x.shape) * s).astype(np.float32), params)
             for s in (0.1, 3.0, 0.5, 2.0, 0.05, 1.0)]  # some above the clip norm, some below
    expected = torch_reference(params, grads, CFG)
    state, p = optimizer.init(params), params
    step = jax.jit(lambda g, s, p: optimizer.update(g, s, p, 0, CFG))
    for g in grads:
        p, state, _ = step(g, state, p)
    for path, value in jax.tree_util.tree_flatten_with_path(p)[0]:
        np.testing.assert_allclose(np.asarray(value), expected[jax.tree_util.keystr(path)], rtol=2e-5, atol=1e-6)


def test_other_decoders_heads_and_moments_stay_bit_identical():
    rng = np.random.default_rng(1)
    params = tree(rng, n_decoders=2)
    state = optimizer.init(params)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    p1, s1, _ = optimizer.update(grads, state, params, 0, CFG)
    for a, b in zip(jax.tree.leaves(params["decoder_1"]), jax.tree.leaves(p1["decoder_1"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(state.adam["decoder_1"]), jax.tree.leaves(s1.adam["decoder_1"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(params["decoder_0"]["layer1"]), np.asarray(p1["decoder_0"]["layer1"]))
    assert not np.array_equal(np.asarray(params["layers"]["w"]), np.asarray(p1["layers"]["w"]))
    p2, s2, _ = optimizer.update(grads, s1, p1, 1, CFG)
    for a, b in zip(jax.tree.leaves(p1["decoder_0"]), jax.tree.leaves(p2["decoder_0"])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert int(s2.step) == 2 and int(s2.adam["decoder_1"].count) == 1 and int(s2.adam["shared"].count) == 2
