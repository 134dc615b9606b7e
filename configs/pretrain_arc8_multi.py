"""Pretraining ARC8-Encoder_multi: one Llama 3.2 3B encoder (26 layers), pooling factor 8, for two
frozen decoders at once: head 0 Llama 3.1 8B, head 1 Mistral 7B v0.3 (the paper's pretraining; the
released ARC8_Encoder_multi, same head order). Each step draws one decoder uniformly and updates
the shared encoder and that decoder's projector and <Rec>/<Cont>; the other head is left untouched. Otherwise
the pretraining recipe of configs/common/paper.py unchanged: 80k steps of 128 samples.

Before the first run (ROOT = /data/arc_jax; every path is an override away, see configs/README.md):

    arc-jax convert ROOT/models/Llama3.2-3B ROOT/encoders/fresh_2heads --fresh-encoder --decoder-dims 4096 4096
    arc-jax convert ROOT/models/Llama3.1-8B ROOT/decoders/llama3.1-8b --dtype bfloat16
    arc-jax convert ROOT/models/Mistral-7B-v0.3 ROOT/decoders/mistral-7b-v0.3 --dtype bfloat16
    arc-jax train --config configs/pretrain_arc8_multi.py --workdir ROOT/runs/pretrain_arc8_multi
"""

from pathlib import Path
from runpy import run_path

pretraining = run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    # One batch shape serves both decoders: a step's batch is tokenised for the decoder drawn for it (a
    # Mistral batch re-tokenises to fewer encoder tokens, see pretrain_arc8_mistral.py).
    return pretraining(["llama3.1-8b", "mistral-7b-v0.3"], POOLING_FACTOR, init_encoder="encoders/fresh_2heads")
