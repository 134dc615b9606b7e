"""Fine-tuning ARC4-Encoder_multi: the two-decoder ARC8 pretrained encoder (pretrain_arc8_multi.py;
head 0 Llama 3.1 8B, head 1 Mistral 7B) fine-tuned at pooling factor 4 on few-shot context
compression for both decoders (the paper's fine-tuning; "ARC4 multi" of Table 1). Each step draws one decoder
uniformly; the other decoder's head is left untouched. add_olmo.py starts from this run.

The fine-tuning recipe of configs/common/paper.py (PF 8 -> 4 as in finetune_arc4_llama3.py) with
what several decoders change: 8000 steps of ~64 samples; documents of up to 1024 encoder tokens.
<Rec>/<Cont> train at the encoder's rate, 2e-6, as in the reference's code (its encoder group, reference
train.py L258-271); the paper's Table 11 gives them 3e-5 for multi-decoder fine-tuning:
--config.optimizer.special_lr=3e-5.

    arc-jax train --config configs/finetune_arc4_multi.py --workdir ROOT/runs/finetune_arc4_multi

To fine-tune the released encoder instead: `arc-jax convert <ARC8_Encoder_multi download>
ROOT/encoders/ARC8_Encoder_multi` and --config.init_encoder=ROOT/encoders/ARC8_Encoder_multi.
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 4  # the single place the pooling factor is set (model.encoder.compress_rates = [-4])


def get_config():
    # At PF 4, ~800 decoder slots a sample: 128 rows x 1024 (131k encoder slots, up to 8 documents a row)
    # and 16 rows x 3584 (57k decoder slots) hold ~62 samples (a packing simulation: ~98% encoder, ~88%
    # decoder fill). The longest sample, 6 documents of 1024 tokens (6 x 256 vectors + text), fits a
    # 3584-slot row. One shape serves both decoders (a step's batch is tokenised for the decoder drawn
    # for it). 8 GPUs: 16 encoder + 2 decoder rows each.
    shape = dict(encoder_rows=128, encoder_len=1024, decoder_rows=16, decoder_len=3584, max_contexts_per_row=8)
    config = finetuning(["llama3.1-8b", "mistral-7b-v0.3"], POOLING_FACTOR,
                        init_encoder="runs/pretrain_arc8_multi", shape=shape)
    config.max_steps = 8000  # paper: 4k-8k; the reference fine-tunes the two-decoder encoder for 8000 steps
    config.data.max_len = 1024  # encoder tokens kept of a document (the reference's multi-decoder seq_len)
    return config
