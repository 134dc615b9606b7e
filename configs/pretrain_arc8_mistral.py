"""Pretraining ARC8-Encoder_Mistral: a Llama 3.2 3B encoder (26 layers), pooling factor 8, for a
frozen Mistral 7B v0.3 (the paper's pretraining; the released ARC8_Encoder_Mistral). The pretraining recipe
of configs/common/paper.py unchanged: 80k steps of 128 samples, continuation probability 0.8.

Before the first run (ROOT = /data/arc_jax; every path is an override away, see configs/README.md):

    arc-jax convert ROOT/models/Llama3.2-3B ROOT/encoders/fresh_1head --fresh-encoder --decoder-dims 4096
    arc-jax convert ROOT/models/Mistral-7B-v0.3 ROOT/decoders/mistral-7b-v0.3 --dtype bfloat16
    arc-jax train --config configs/pretrain_arc8_mistral.py --workdir ROOT/runs/pretrain_arc8_mistral
"""

from pathlib import Path
from runpy import run_path

pretraining = run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    # The recipe's batch shape holds 128 samples here too: a span of 256 Mistral tokens re-tokenises to
    # fewer Llama 3 tokens, so the encoder rows fill less and the decoder is what bounds a batch.
    return pretraining(["mistral-7b-v0.3"], POOLING_FACTOR, init_encoder="encoders/fresh_1head")
