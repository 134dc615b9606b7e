"""Adding a new decoder, OLMo 7B, to a trained encoder: the fine-tuned ARC4-Encoder_multi
(finetune_arc4_multi.py, heads 0 Llama 3.1 8B and 1 Mistral 7B) gets a third head for OLMo; the
encoder is frozen and only the new projector (3072 -> 2048 -> 4096) and its <Rec>/<Cont> vectors
train (the paper's new-decoder experiment with OLMo).

Pooling factor 4 on the few-shot fine-tuning mixture, as the encoder was fine-tuned: the fine-tuning
recipe of configs/common/paper.py with the rates of the reference's
configs/finetuning_to_add_OLMo.yaml (the paper gives none for this run): warm-up for 100 steps to
1e-4 (projector and special vectors), 8000 steps of ~64 samples, passages of up to 5 x 1024 encoder
tokens.

    arc-jax convert ROOT/models/OLMo-7B-hf ROOT/decoders/olmo-7b --dtype bfloat16
    arc-jax train --config configs/add_olmo.py --workdir ROOT/runs/add_olmo

The trainer starts heads 0 and 1 and the encoder from init_encoder; head 2's <Rec>/<Cont> start
from head 0's (init_special_from_head = 0: the reference's run loads them from its multi-decoder
checkpoint's rec_tok.0 / cont_tok.0, the Llama head) and its projector is fresh (initialised like
torch.nn.Linear). Heads 0 and 1 are saved unchanged, so the result serves all three decoders.
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 4  # the single place the pooling factor is set (model.encoder.compress_rates = [-4])


def get_config():
    # The batch shape of finetune_arc4_multi.py (the arithmetic is there); a frozen encoder needs no
    # gradient or Adam moments, so memory is ample (FSDP shards the frozen weights too).
    shape = dict(encoder_rows=128, encoder_len=1024, decoder_rows=16, decoder_len=3584, max_contexts_per_row=8)
    # Three heads, in the order of the encoder being extended: 0 Llama 3.1 8B, 1 Mistral 7B, 2 OLMo 7B;
    # init_encoder holds the encoder and heads 0, 1.
    config = finetuning(["llama3.1-8b", "mistral-7b-v0.3", "olmo-7b"], POOLING_FACTOR,
                        init_encoder="runs/finetune_arc4_multi", shape=shape)
    config.model.decoders = [config.model.decoders[2]]  # only the new decoder is loaded: this run trains head 2 alone
    config.init_special_from_head = 0  # head 2's <Rec>/<Cont> start from head 0's (Llama), as the reference's
    config.max_steps = 8000  # the reference's finetuning_to_add_OLMo yaml
    # The encoder is frozen: no encoder layer and not its embedding matrix train.
    config.trainable.update({"encoder_layers": 0, "embedding": False})
    # encoder_lr trains nothing here (the encoder is frozen) but sets the one-cycle shape: div factors
    # encoder_lr / initial_lr and encoder_lr / final_lr.
    config.optimizer.update({"encoder_lr": 1e-4, "special_lr": 1e-4, "projector_lr": 1e-4, "warmup_steps": 100})
    config.data.max_len = 5 * 1024  # encoder tokens kept of each passage (5 x the reference's seq_len 1024)
    return config
