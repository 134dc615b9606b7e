"""Fine-tuning ARC4-Encoder for Llama 3.1 8B: the ARC8 pretrained encoder (pretrain_arc8_llama3.py)
fine-tuned at pooling factor 4 on few-shot context compression (the paper's fine-tuning; "ARC4" of Table 1).

Pooling has no parameters, so an encoder pretrained at PF 8 is fine-tuned at PF 4 directly, as the
reference's finetuning_ARC4_* configs do (start from a higher PF, never a lower one). Otherwise the
fine-tuning recipe of configs/common/paper.py unchanged: 4000 steps of ~64 samples.

    arc-jax train --config configs/finetune_arc4_llama3.py --workdir ROOT/runs/finetune_arc4_llama3

To fine-tune the released encoder instead: `arc-jax convert <ARC8_Encoder_Llama download>
ROOT/encoders/ARC8_Encoder_Llama` and --config.init_encoder=ROOT/encoders/ARC8_Encoder_Llama.
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 4  # the single place the pooling factor is set (model.encoder.compress_rates = [-4])


def get_config():
    # At PF 4, ~800 decoder slots a sample: 64 rows x 2048 (131k encoder slots, up to 16 documents a row)
    # and 16 rows x 4096 (65k decoder slots) hold ~60 samples (a packing simulation: ~99% encoder, ~76%
    # decoder fill). The longest sample, 6 documents of 2048 tokens (6 x 512 vectors + text), still fits
    # a 4096-slot row. 8 GPUs: 8 encoder + 2 decoder rows each.
    shape = dict(encoder_rows=64, encoder_len=2048, decoder_rows=16, decoder_len=4096, max_contexts_per_row=16)
    return finetuning(["llama3.1-8b"], POOLING_FACTOR, init_encoder="runs/pretrain_arc8_llama3", shape=shape)
