"""Variants for notes/step_ab.py: the RMSNorm scales' gradients as reductions (as before) and as
matmuls with ones (arc_jax/model/layers.py `_scaled_by_matmul_gradient`, used on one CPU device since).

    PYTHONPATH=notes python notes/step_ab.py norm_scale_gradient_variants --rounds 40
"""

from arc_jax.model import layers

_SINCE = layers._on_one_cpu_device


def reduction():
    layers._on_one_cpu_device = lambda: False


def matmul():
    layers._on_one_cpu_device = _SINCE


VARIANTS = {"reduction": reduction, "matmul": matmul}
