"""The layer stack's rematerialisation in its two compiled forms: the scan's loop and the same scan
fully unrolled (`unroll_layers`)."""

import functools
import re

import jax
import jax.numpy as jnp
import pytest

from arc_jax.model.config import BackboneConfig
from arc_jax.model.stack import LayerStack

LAYERS = 3
CFG = BackboneConfig(dim=64, n_layers=LAYERS, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=256, vocab_size=32)


@functools.cache
def _compiled_dots(remat_policy: str, unroll: bool) -> int:
    """Matmuls in the compiled gradient of the stack (once per loop body when scanned)."""
    h = jax.random.normal(jax.random.key(0), (2, 32, CFG.dim))
    segment_ids = jnp.ones((2, 32), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(32), (2, 32))
    stack = LayerStack(CFG, LAYERS, causal=True, remat_policy=remat_policy, unroll=unroll)
    params = stack.init(jax.random.key(1), h, segment_ids, positions)
    loss = lambda p, h: jnp.sum(stack.apply(p, h, segment_ids, positions) ** 2)  # noqa: E731
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, h).compile().as_text()
    return len(re.findall(r"= \S+ dot\(", text))


@pytest.mark.parametrize("remat_policy", ["full", "dots_no_batch"])
def test_unrolled_layers_recompute_what_the_scanned_layer_recomputes(remat_policy):
    # Unrolled, forward and recomputation sit in one straight-line program: unless the remat is
    # marked prevent_cse, XLA merges the recomputed matmuls with the forward ones and keeps their
    # outputs alive, which is the memory the policy was chosen to save (an H200 plan of
    # configs/bench_gpu_real_shapes.py unrolled: 147 GB instead of 98).
    recomputed_per_layer = _compiled_dots(remat_policy, False) - _compiled_dots("none", False)
    assert recomputed_per_layer > 0
    assert _compiled_dots(remat_policy, True) - _compiled_dots("none", True) == LAYERS * recomputed_per_layer
