"""Fine-tuning ARC8-Encoder for Llama 3.1 8B: the ARC8 pretrained encoder (pretrain_arc8_llama3.py)
fine-tuned at its pooling factor, 8, on few-shot context compression (the paper's fine-tuning; "ARC8" of
Table 1). The fine-tuning recipe of configs/common/paper.py unchanged: 4000 steps of ~64 samples.

    arc-jax train --config configs/finetune_arc8_llama3.py --workdir ROOT/runs/finetune_arc8_llama3

To fine-tune the released encoder instead: `arc-jax convert <ARC8_Encoder_Llama download>
ROOT/encoders/ARC8_Encoder_Llama` and --config.init_encoder=ROOT/encoders/ARC8_Encoder_Llama.
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    # At PF 8, ~550 decoder slots a sample: 64 rows x 2048 (131k encoder slots, up to 16 documents a row)
    # and 16 rows x 2560 (41k decoder slots) hold ~60 samples (a packing simulation: ~99% encoder, ~83%
    # decoder fill). The longest sample, 6 documents of 2048 tokens (6 x 256 vectors + text), still fits
    # a 2560-slot row. 8 GPUs: 8 encoder + 2 decoder rows each. PF 4 needs decoder_len 4096
    # (finetune_arc4_*.py).
    shape = dict(encoder_rows=64, encoder_len=2048, decoder_rows=16, decoder_len=2560, max_contexts_per_row=16)
    return finetuning(["llama3.1-8b"], POOLING_FACTOR, init_encoder="runs/pretrain_arc8_llama3", shape=shape)
