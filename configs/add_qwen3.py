"""Adding a new decoder, Qwen3 8B, to a trained encoder, as configs/add_olmo.py adds OLMo 7B: the
fine-tuned ARC4-Encoder_multi (finetune_arc4_multi.py, heads 0 Llama 3.1 8B and 1 Mistral 7B) gets
a third head for Qwen3 8B; the encoder is frozen and only the new projector (3072 -> 2048 -> 4096)
and its <Rec>/<Cont> vectors train, with add_olmo.py's rates and steps (the paper has no Qwen run).

The encoder reads Llama 3.2 tokens and Qwen3 has its own tokenizer (tokenizer.json, no BOS): every
text is retokenized for the decoder, as for Mistral and OLMo.

    arc-jax convert Qwen/Qwen3-8B ROOT/decoders/qwen3-8b --dtype bfloat16   # a hub id or a local folder
    arc-jax train --config configs/add_qwen3.py --workdir ROOT/runs/add_qwen3
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 4  # the single place the pooling factor is set (model.encoder.compress_rates = [-4])


def get_config():
    # The batch shape and optimiser of add_olmo.py (a frozen encoder: no gradient or Adam moments for it).
    shape = dict(encoder_rows=128, encoder_len=1024, decoder_rows=16, decoder_len=3584, max_contexts_per_row=8)
    config = finetuning(["llama3.1-8b", "mistral-7b-v0.3", "qwen3-8b"], POOLING_FACTOR,
                        init_encoder="runs/finetune_arc4_multi", shape=shape)
    config.model.decoders = [config.model.decoders[2]]  # only the new decoder is loaded: this run trains head 2 alone
    config.init_special_from_head = 0  # head 2's <Rec>/<Cont> start from head 0's (Llama)
    config.max_steps = 8000
    config.trainable.update({"encoder_layers": 0, "embedding": False})
    config.optimizer.update({"encoder_lr": 1e-4, "special_lr": 1e-4, "projector_lr": 1e-4, "warmup_steps": 100})
    config.data.max_len = 5 * 1024
    return config
