"""Pretraining the long-context ARC8-Encoder: a Llama 3.2 3B encoder (26 layers), pooling factor 8,
for a frozen Llama 2 7B Chat, without <Rec>/<Cont> special vectors (the reference's long-context
variant drops them; the paper's context-extension experiment). Stage 1 of 2:
long_context_finetune_llama2chat.py follows.

The pretraining tasks inside the Llama 2 Chat template ("[INST] Text:\n\n<C> Repeat the text above
exactly. [/INST]..." / "... Continue the text above. [/INST]..."), otherwise the pretraining recipe
of configs/common/paper.py unchanged, as the released encoders: 80k steps of 128 samples.

Before the first run (ROOT = /data/arc_jax; every path is an override away, see configs/README.md):

    arc-jax convert ROOT/models/Llama3.2-3B ROOT/encoders/fresh_1head --fresh-encoder --decoder-dims 4096
    arc-jax convert ROOT/models/Llama2-7B-Chat ROOT/decoders/llama2-7b-chat --dtype bfloat16
    arc-jax train --config configs/long_context_pretrain_llama2chat.py \
        --workdir ROOT/runs/long_context_pretrain_llama2chat

The fresh encoder's <Rec>/<Cont> vectors are not used (model.encoder.rec_tok/cont_tok are False).
"""

from pathlib import Path
from runpy import run_path

pretraining = run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    config = pretraining(["llama2-7b-chat"], POOLING_FACTOR, init_encoder="encoders/fresh_1head")
    config.model.encoder.update({"rec_tok": False, "cont_tok": False})  # no <Rec>/<Cont>: optimizer.special_lr unused
    config.data.chat_template = True  # the Llama 2 Chat variants of both tasks
    # The recipe's batch shape holds 128 samples here too: the chat template adds ~17 text tokens a
    # sample and <Cont>/<Rec> go (up to ~305 decoder slots a sample, against 289 in common/paper.py,
    # whose rows of 1232 hold 4 of 289), and a span of 256 Llama 2 tokens re-tokenises to fewer Llama 3
    # tokens (the encoder rows fill less). Rows of 1280 keep 4 samples a row (not measured with Llama 2's tokenizer:
    # on data shaped like the paper's, whose tokenizer spends ~57 tokens on the template, samples reach 345
    # slots, a row holds 3 and useful work is 86.1%; `arc-jax data check` proposed one sample a row of 348,
    # 93.5%: README, "Attention rows"). Run the check on your data.
    config.data.shape.decoder_len = 1280
    return config
