"""Fine-tuning the long-context ARC8-Encoder for Llama 2 7B Chat: stage 2 of 2 after
long_context_pretrain_llama2chat.py (the paper's context-extension
experiment, e.g. NarrativeQA and Qasper through Llama 2's 4k window).

A record {"text", "instruction", "answer"} becomes one sample: the document cut into up to 32 chunks
of 1024 encoder tokens, each compressed on its own (8x: <= 4096 vectors), the compressed chunks
concatenated inside "[INST] Text:\n\n<C...C> {instruction} [/INST] {answer}", loss on the answer;
no <Rec>/<Cont>. The fine-tuning recipe of configs/common/paper.py (its rates: the paper gives none
for this stage) with the paper's Table 11 schedule and batch: 8000 steps, warm-up 1000, 2 documents
a GPU x 4 accumulation steps x 8 GPUs = 64 documents a step (here 8 micro-batches of 8 documents of
32k tokens, more when shorter; no yaml of the reference exists for this run).

    arc-jax train --config configs/long_context_finetune_llama2chat.py \
        --workdir ROOT/runs/long_context_finetune_llama2chat
"""

from pathlib import Path
from runpy import run_path

finetuning = run_path(Path(__file__).parent / "common" / "paper.py")["finetuning"]

POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config():
    # A document of 32k tokens takes 32 encoder rows of 1024 and 32 x 128 = 4096 vectors + ~60 template
    # and instruction tokens + the answer in the decoder, so 8 documents a step need 256 encoder rows
    # and 8 decoder rows of 4608 (a full document runs past Llama 2's 4096 positions, as the paper's 32
    # chunks of 1024 at 8x do; use decoder_len 4096 to drop such samples instead: they are counted).
    # Shorter documents pack several to a row (a packing simulation with documents of ~12k tokens gives
    # ~18 samples a step, 92-99% fill). 8 GPUs: 32 encoder rows (32k tokens) + 1 decoder row each; 16
    # GPUs need decoder_rows 16.
    # No loss buffer (loss_slots 0: the head on every slot): about one sample a row, whose answer length
    # on long-context data is not measured here, and Llama 2's head is ~2% of its decoder's FLOPs.
    shape = dict(encoder_rows=256, encoder_len=1024, decoder_rows=8, decoder_len=4608, max_contexts_per_row=4,
                 loss_slots=0)
    config = finetuning(["llama2-7b-chat"], POOLING_FACTOR, init_encoder="runs/long_context_pretrain_llama2chat",
                        shape=shape)
    config.max_steps = 8000  # paper Table 11
    config.grad_accum = 8  # 8 micro-batches of 8 documents: the paper's 64 a step (2 a GPU x accum 4 x 8 GPUs)
    config.optimizer.warmup_steps = 1000  # paper Table 11
    config.model.encoder.update({"rec_tok": False, "cont_tok": False})  # no <Rec>/<Cont>: optimizer.special_lr unused
    config.data.sources = "{data_dir}/data/long_context/train.jsonl"  # {"text", "instruction", "answer"}
    config.data.task = "long_context"  # always inside the chat template: data.chat_template is for pretraining
    config.data.max_len = 1024  # not read by long_context: its chunks are 1024 tokens, at most 32 a document
    config.data.max_passages = 1  # few-shot fine-tuning only
    # No held-out evaluation by default; to add one (same record format), e.g.
    # --config.eval.sources={data_dir}/data/long_context/eval.jsonl --config.eval.every=500
    return config
