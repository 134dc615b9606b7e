"""Fine-tuning ARC4-Encoder_multi: the two-decoder ARC8 pretrained encoder (pretrain_arc8_multi.py;
head 0 Llama 3.1 8B, head 1 Mistral 7B) fine-tuned at pooling factor 4 on few-shot context
compression for both decoders (the paper's fine-tuning; "ARC4 multi" of Table 1). The decoders alternate as in the
reference's code (decoder_schedule "alternate", its fair_instruct: Mistral at odd steps, Llama at even ones,
Mistral re-using the records of Llama's previous batch); the paper says a decoder is sampled uniformly at each
step: --config.decoder_schedule=random. A step leaves the other decoder's head untouched. add_olmo.py starts from
this run.

The fine-tuning recipe of configs/common/paper.py (PF 8 -> 4 as in finetune_arc4_llama3.py) with
what several decoders change: 8000 steps of ~64 samples; passages of up to 5 x 1024 encoder tokens.
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
    # 3584-slot row. One shape serves both decoders (a step's batch is tokenised for the decoder it
    # trains; Mistral's re-made batch drops, and counts, the samples its tokens no longer fit). 8 GPUs: 16
    # encoder + 2 decoder rows each.
    shape = dict(encoder_rows=128, encoder_len=1024, decoder_rows=16, decoder_len=3584, max_contexts_per_row=8)
    config = finetuning(["llama3.1-8b", "mistral-7b-v0.3"], POOLING_FACTOR,
                        init_encoder="runs/pretrain_arc8_multi", shape=shape)
    config.max_steps = 8000  # paper: 4k-8k; the reference fine-tunes the two-decoder encoder for 8000 steps
    config.data.max_len = 5 * 1024  # encoder tokens kept of each passage (5 x the reference's seq_len 1024)
    # The reference's fair_instruct (finetuning_ARC4_Encoder_multi.yaml, train.py L333-364): decoder 1
    # (Mistral) at odd steps, decoder 0 (Llama) at even ones, Mistral re-using the records of Llama's
    # previous batch re-made for its tokenizer: 4001 distinct batches in 8000 steps, each but the first
    # training both decoders. The paper's "sample a decoder uniformly": --config.decoder_schedule=random.
    config.decoder_schedule = "alternate"
    return config
