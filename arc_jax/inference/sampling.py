"""Choosing the next token from logits: greedy, or temperature with nucleus (top-p) sampling.

Top-p follows the reference (mistral-style `sample_top_p`): sort the probabilities, keep each
token whose cumulative probability *before* it is <= top_p (so the most probable token is always
kept and the kept set is the smallest one reaching top_p), renormalise, draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEFAULT_TOP_P = 0.8  # the reference's evaluation setting


def top_p_mask(probs: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """Bool [..., vocab]: the nucleus of each distribution in `probs` [..., vocab].

    Decided in sorted order and scattered back by index, never by comparing probabilities again:
    on a GPU, XLA may compute `probs` twice in two fusions that round differently, and a value
    test then dropped a kept token (seen on an H100). Ties are broken by sort order, lower token id
    first (the reference keeps whichever tied tokens its sort puts first)."""
    order = jnp.argsort(-probs, axis=-1, stable=True)
    descending = jnp.take_along_axis(probs, order, axis=-1)
    kept_in_order = jnp.cumsum(descending, axis=-1) - descending <= top_p
    return jnp.put_along_axis(jnp.zeros_like(kept_in_order), order, kept_in_order, axis=-1, inplace=False)


def sample_next(logits: jax.Array, key: jax.Array, temperature: float | jax.Array, top_p: float | jax.Array,
                greedy: bool) -> jax.Array:
    """Int32 token ids [...] from float logits [..., vocab]: argmax when `greedy` (a static
    choice), else a draw from softmax(logits / temperature) restricted to its top-p nucleus."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits.astype(jnp.float32) / temperature
    keep = top_p_mask(jax.nn.softmax(scaled, axis=-1), top_p)
    return jax.random.categorical(key, jnp.where(keep, scaled, -jnp.inf), axis=-1).astype(jnp.int32)
