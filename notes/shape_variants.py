"""Variants for notes/step_ab.py: a config's step at its own batch shape and at another one, given as
`--config.data.shape.*` overrides in the SHAPE_BEFORE environment variable (space-separated), each
variant's trainer packing its own batches.

    SHAPE_BEFORE="--config.data.shape.encoder_rows=12 ..." JAX_NUM_CPU_DEVICES=2 PYTHONPATH=notes \\
        python notes/step_ab.py shape_variants --config configs/demo_arc_pretrain.py --set=...

Both shapes are static, so a step's time does not depend on what its batch holds; the ratio is the
step time's, and the samples a batch (the trainer's counts) say what each step did.
"""

import os

from arc_jax import config_loading

_LOAD = config_loading.load_config


def before():
    extra = os.environ["SHAPE_BEFORE"].split()
    config_loading.load_config = lambda path, overrides=(): _LOAD(path, list(overrides) + extra)


def after():
    config_loading.load_config = _LOAD


VARIANTS = {"before": before, "after": after}
