"""Tiny few-shot fine-tuning on CPU, with no download: tiny_cpu.py's models and generated corpus,
trained on its QA records in the reference's interleaved few-shot layout (arc_jax.prompts.few_shot):

    [BOS]"Document: " <C><Cont> "\\nQuestion: q\\nAnswer: a\\n\\nDocument: " <C><Cont> ... "\\nQuestion: q\\nAnswer: " a [EOS]

every document compressed, loss on the last answer and EOS. See what the decoder reads with

    arc-jax data show --config configs/tiny_cpu_finetune.py --n 2

and train with `arc-jax train --config configs/tiny_cpu_finetune.py --workdir W` (from random
weights; --config.init_encoder=W_PRETRAIN starts from a tiny_cpu.py run).
"""

from pathlib import Path
from runpy import run_path

import ml_collections

tiny_cpu = run_path(str(Path(__file__).parent / "tiny_cpu.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
    config = tiny_cpu()
    config.max_steps = 100
    # path:weight:shots. Two in-context examples from the same file, drawn per sample.
    config.data.sources = "{data_dir}/qa_train.jsonl:1:2"
    config.data.task = "finetune"
    config.data.max_len = 5 * 64  # encoder tokens kept of each passage (the reference's 5 x seq_len)
    config.data.continuation_prob = 0.0  # pretraining only
    config.data.max_passages = 4  # the reference's; the tiny records have one passage each
    config.data.answer_layout = "reference"  # "eval": " " + answer in one call (configs/demo_arc_finetune.py)
    # A sample: three documents (60-102 encoder tokens each, ~20 vectors + <Cont> at PF 4) and their
    # questions and answers: ~235 encoder tokens and up to 158 decoder slots. Loss is on the last
    # answer and EOS only (<= 6 tokens a sample): the output head runs on a loss buffer. Two documents
    # an encoder row of 168 and one sample a decoder row of 160 did 79.7% useful work (most of the
    # rest attention across the documents of a row, and empty decoder slots). Since 2026-12-06 each
    # document and sample is attended alone, in attention rows (arc_jax/model/attention_rows.py): 12
    # encoder ones of 80-104 slots and 4 decoder ones of 144-160 for the ~12 documents and ~4 samples a
    # batch; attention no longer depends on the rows' lengths, so one long row on each side, which
    # first fit fills more fully. `arc-jax data check --config configs/tiny_cpu_finetune.py --batches
    # 300`: useful work 79.7% -> 91.1% of executed, encoder and decoder rows 93% and 86% -> 96% and 96%
    # full, the same 3.9 samples a batch, none dropped.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 1, "encoder_len": 984, "decoder_rows": 1, "decoder_len": 576, "max_contexts_per_row": 12,
        "encoder_span": 102, "decoder_span": 0, "loss_slots": 32,
        "encoder_attention_rows": [[3, 80], [4, 88], [3, 96], [2, 104]],
        "decoder_attention_rows": [[1, 144], [2, 152], [1, 160]], "attention_groups": 1})
    config.eval = ml_collections.ConfigDict({"sources": "{data_dir}/qa_eval.jsonl:1:2", "every": 50, "batches": 2})
    return config
