"""Variants for notes/step_ab.py: the attention rows' gathers before 2026-12-06 (clamped indices:
padding read slot 0, and the backward scatter-adds were not marked unique) and now (`_take`: every
index distinct, padding past the end, read as zeros and dropped in the backward pass). The baseline
puts the old functions back from a file given in OLD_ATTENTION_ROWS (`git show
f035a77:arc_jax/model/attention_rows.py > old_attention_rows.py`):

    OLD_ATTENTION_ROWS=old_attention_rows.py JAX_NUM_CPU_DEVICES=2 PYTHONPATH=notes \\
        python notes/step_ab.py attention_rows_gather_variants --config configs/demo_arc_finetune.py \\
        --set=--config.data.dir=DEMO/data --set=--config.model.decoders.0.path=DEMO/decoder_lm/decoder \\
        --set=--config.init_encoder=DEMO/arc_pretrain
"""

import importlib.util
import os

from arc_jax.model import attention, attention_rows

_NEW = attention_rows.attend_in_rows


def _old():
    spec = importlib.util.spec_from_file_location("old_attention_rows", os.environ["OLD_ATTENTION_ROWS"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.attend_in_rows


def before():
    attention.attend_in_rows = _old()


def after():
    attention.attend_in_rows = _NEW


VARIANTS = {"before": before, "after": after}
