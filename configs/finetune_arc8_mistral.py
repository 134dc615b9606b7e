"""Fine-tuning ARC8-Encoder for Mistral 7B: the ARC8 pretrained encoder (pretrain_arc8_mistral.py)
fine-tuned at its pooling factor, 8, on few-shot context compression (the paper's fine-tuning; "ARC8" of
Table 1). The fine-tuning recipe of configs/common/paper.py unchanged: 4000 steps of ~64 samples.

    arc-jax train --config configs/finetune_arc8_mistral.py --workdir ROOT/runs/finetune_arc8_mistral

To fine-tune the released encoder instead: `arc-jax convert <ARC8_Encoder_Mistral download>
ROOT/encoders/ARC8_Encoder_Mistral` and --config.init_encoder=ROOT/encoders/ARC8_Encoder_Mistral.
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    # The batch shape of finetune_arc8_llama3.py (the arithmetic is there).
    shape = dict(encoder_rows=64, encoder_len=2048, decoder_rows=16, decoder_len=2560, max_contexts_per_row=16)
    return finetuning(["mistral-7b-v0.3"], POOLING_FACTOR, init_encoder="runs/pretrain_arc8_mistral", shape=shape)
