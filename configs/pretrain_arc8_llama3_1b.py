"""Pretraining a 1B-class ARC8 encoder for Llama 3.1 8B: Llama 3.2 1B without its last 2 layers (14
remain) in place of the paper's Llama 3.2 3B, pooling factor 8, otherwise the pretraining recipe of
configs/common/paper.py unchanged (80k steps of 128 samples, continuation probability 0.8). At a
4096-token context and 100 new tokens it answers with 3.6x fewer FLOPs than the full context where
the 3B encoder gives 1.8x (README, "Smaller encoders").

    arc-jax convert meta-llama/Llama-3.2-1B ROOT/encoders/fresh_1b_1head --fresh-encoder --decoder-dims 4096
    arc-jax convert ROOT/models/Llama3.1-8B ROOT/decoders/llama3.1-8b --dtype bfloat16
    arc-jax train --config configs/pretrain_arc8_llama3_1b.py --workdir ROOT/runs/pretrain_arc8_llama3_1b
"""

from pathlib import Path
from runpy import run_path

pretraining = run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    return pretraining(["llama3.1-8b"], POOLING_FACTOR, init_encoder="encoders/fresh_1b_1head", encoder="llama3.2-1b")
