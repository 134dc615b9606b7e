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
    # A sample: three documents (~80 encoder tokens each, ~20 vectors + <Cont> at PF 4) and their
    # questions and answers: ~235 encoder tokens and ~140 decoder slots; two documents an encoder row,
    # two samples a decoder row: ~4 samples a batch fill ~92% of encoder and ~91% of decoder slots
    # (`arc-jax data check --config configs/tiny_cpu_finetune.py --batches 30`). Loss is on the last
    # answer and EOS only (<= 9 tokens a row): the output head runs on a buffer of 16 slots a row instead
    # of 300, and a sample's <= 149 slots bound the decoder's attention (data check's proposal: useful
    # work 57% -> 73% of executed on 20 batches).
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 6, "encoder_len": 168, "decoder_rows": 2, "decoder_len": 300, "max_contexts_per_row": 4,
        "encoder_span": 0, "decoder_span": 149, "loss_slots": 16})
    config.eval = ml_collections.ConfigDict({"sources": "{data_dir}/qa_eval.jsonl:1:2", "every": 50, "batches": 2})
    return config
