"""Variants for notes/step_ab.py: the train step's loss with optax's cross-entropy and a gathered
target logit (before 2026-12-06) and with arc_jax's `cross_entropy` / `target_logits` (now):

    PYTHONPATH=notes python notes/step_ab.py loss_variants --rounds 16
"""

import jax.numpy as jnp
import optax

from arc_jax.train import step

_NEW = step.cross_entropy, step.correct_tokens


def _old_correct_tokens(logits, targets, mask):
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return ((target_logit >= logits.max(-1)) * mask).sum()


def before():
    step.cross_entropy, step.correct_tokens = optax.softmax_cross_entropy_with_integer_labels, _old_correct_tokens


def after():
    step.cross_entropy, step.correct_tokens = _NEW


VARIANTS = {"before": before, "after": after}
