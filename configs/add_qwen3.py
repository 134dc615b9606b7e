"""Adding a new decoder, Qwen3 8B, to a trained encoder: configs/add_olmo.py with Qwen3 8B in
OLMo 7B's place. The fine-tuned ARC4-Encoder_multi (finetune_arc4_multi.py, heads 0 Llama 3.1 8B and
1 Mistral 7B) gets a third head; the encoder is frozen and only the new projector (3072 -> 2048 ->
4096) and its <Rec>/<Cont> vectors train, with add_olmo.py's rates, steps and batch (the paper has
no Qwen run).

The encoder reads Llama 3.2 tokens and Qwen3 has its own tokenizer (tokenizer.json, no BOS): every
text is retokenized for the decoder, as for Mistral and OLMo.

    arc-jax convert Qwen/Qwen3-8B ROOT/decoders/qwen3-8b --dtype bfloat16   # a hub id or a local folder
    arc-jax train --config configs/add_qwen3.py --workdir ROOT/runs/add_qwen3
"""

from pathlib import Path
from runpy import run_path

add_olmo = run_path(Path(__file__).parent / "add_olmo.py")["get_config"]
decoder_config = run_path(Path(__file__).parent / "common" / "paper.py")["decoder_config"]


def get_config():
    config = add_olmo()
    config.model.decoders = [decoder_config("qwen3-8b", head=2)]  # head 2, trained alone
    config.model.encoder.projectors[2]["out_dim"] = config.model.decoders[0].backbone["dim"]
    return config
