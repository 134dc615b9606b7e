"""Pretraining ARC8-Encoder_Llama: a Llama 3.2 3B encoder (26 layers), pooling factor 8, for a
frozen Llama 3.1 8B (the paper's pretraining; the released ARC8_Encoder_Llama). The pretraining recipe of
configs/common/paper.py unchanged: 80k steps of 128 samples, continuation probability 0.8.

Before the first run (ROOT = /data/arc_jax; every path is an override away, see configs/README.md):

    arc-jax convert ROOT/models/Llama3.2-3B ROOT/encoders/fresh_1head --fresh-encoder --decoder-dims 4096
    arc-jax convert ROOT/models/Llama3.1-8B ROOT/decoders/llama3.1-8b --dtype bfloat16
    arc-jax train --config configs/pretrain_arc8_llama3.py --workdir ROOT/runs/pretrain_arc8_llama3
"""

from pathlib import Path
from runpy import run_path

pretraining = run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    return pretraining(["llama3.1-8b"], POOLING_FACTOR, init_encoder="encoders/fresh_1head")
