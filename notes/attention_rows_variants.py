"""Variants for notes/step_ab.py: the same batches (a config with attention rows, so the same samples
in the same slots) attended on the packed rows (the batches' attention rows dropped) and in their
attention rows (arc_jax/model/attention_rows.py).

    JAX_NUM_CPU_DEVICES=2 PYTHONPATH=notes python notes/step_ab.py attention_rows_variants \
        --config configs/demo_arc_finetune.py --set=--config.data.dir=DEMO/data \
        --set=--config.model.decoders.0.path=DEMO/decoder_lm/decoder --set=--config.init_encoder=DEMO/arc_pretrain
"""

from arc_jax.data import packing

_LAYOUT, _ENCODER_ROWS = packing.layout, packing._encoder_attention_rows


def packed_rows():
    packing.layout = lambda *args, **kwargs: None
    packing._encoder_attention_rows = lambda *args, **kwargs: None


def attention_rows():
    packing.layout, packing._encoder_attention_rows = _LAYOUT, _ENCODER_ROWS


VARIANTS = {"packed_rows": packed_rows, "attention_rows": attention_rows}
