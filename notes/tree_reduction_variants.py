"""Variants for notes/step_ab.py: the train step compiled with XLA:CPU's tree_reduction_rewriter
(as before 3ad290b) and without it (arc_jax/train/xla_cpu.py's options since)."""

from arc_jax.train import xla_cpu

_SINCE = xla_cpu._OPTIONS


def with_tree_reductions():
    xla_cpu._OPTIONS = tuple(option for option in _SINCE if option[0] != xla_cpu.DISABLED_PASSES)


def without_tree_reductions():
    xla_cpu._OPTIONS = _SINCE


VARIANTS = {"with tree reductions": with_tree_reductions, "without": without_tree_reductions}
