"""The CPU demo's ARC pretraining (stage 3 of `arc-jax demo`, which runs it): reconstruction and
continuation on documents about new synthetic people, against the frozen decoder LM the demo trained
(configs/demo_decoder.py), at pooling factor 4.

`arc-jax demo` fills in the paths: data.dir (the demo's corpus), model.decoders.0.path (its trained
decoder) and init_encoder (the encoder it made from that decoder's layers, `convert.fresh`, as the
paper makes its encoder from a truncated Llama). Run by hand:

    arc-jax train --config configs/demo_arc_pretrain.py --workdir DEMO/arc_pretrain \\
        --config.data.dir=DEMO/data --config.model.decoders.0.path=DEMO/decoder_lm/decoder \\
        --config.init_encoder=DEMO/encoder_init

Shapes follow configs/demo_decoder.py's model (128 wide, 2 layers, vocabulary 1536); every field
is described in arc_jax/train/run_config.py.
"""

from pathlib import Path
from runpy import run_path

import ml_collections

decoder_config = run_path(str(Path(__file__).parent / "demo_decoder.py"))["get_config"]


def get_config() -> ml_collections.ConfigDict:
    lm = decoder_config()
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Pretraining length (seed 0, the same decoder LM and fine-tuning, one-shot evaluation,
    # 2026-12-03): 400 steps reached eval loss 3.29 and ARC4 30.9% EM, 800 steps 3.09 and 53.8%,
    # 1600 steps ~3.0 and 72.4%; with 400 the fine-tuning's loss stalls near 0.8, with 1600 it
    # falls to ~0.1-0.2. Fine-tuning stays at 2000 steps (its step-1000 checkpoint: 60.7%). Zero-shot
    # (seed 0, 2ca072b, fine-tuning on encoder rows of 11 x 160): 83.1% after 1200 pretraining steps,
    # 70.0% after 1600: one run of this demo moves by more than such a change (notes/demo_history.md).
    config.max_steps = 1600
    config.checkpoint_every = 800
    config.keep_checkpoints = 2
    config.max_bad_steps = 10
    config.log_every = 25
    config.grad_accum = 1
    config.compute_dtype = "float32"
    config.remat_policy = "none"
    config.unroll_layers = True  # 0.95x the step time of the scanned stacks (A/B on the fine-tuning step)
    config.attention_impl = "xla"
    config.init_encoder = ""  # set by the demo: the encoder made from the decoder's layers

    # The encoder is the decoder's first layers (all but demo.truncated_layers), as `convert.fresh`
    # makes it; the decoder is the demo's trained LM.
    backbone = dict(lm.model)
    backbone["vocab_size"] = lm.data.corpus.get_ref("vocab_size")
    dim = backbone["dim"]
    config.model = ml_collections.ConfigDict()
    config.model.encoder = ml_collections.ConfigDict({
        "backbone": {**backbone, "n_layers": backbone["n_layers"] - lm.demo.truncated_layers},
        "projectors": [{"in_dim": dim, "hidden_dim": lm.demo.projector_hidden, "out_dim": dim}],
        "n_truncated_layers": lm.demo.truncated_layers,
        "compress_rates": [-4],
        "pool_type": "mean",
        "causal": False,
        "n_memory_tokens": 0,
        "rec_tok": True,
        "cont_tok": True,
    })
    config.model.decoders = [ml_collections.ConfigDict({
        "path": "",  # set by the demo: DEMO/decoder_lm/decoder
        "backbone": dict(backbone),
        "tokenizer": "{data_dir}/tokenizer.model",
        "head": 0,
        "dtype": "float32",
    })]
    config.trainable = ml_collections.ConfigDict({"encoder_layers": -1, "embedding": True})
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 2e-3, "special_lr": 2e-3, "projector_lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 30,
        "initial_lr": 1e-5, "final_lr": 1e-5, "clip_norm": 1.0, "b1": 0.9, "b2": 0.95, "eps": 1e-8})
    config.mesh_shape = [-1, 1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = lm.data.dir
    config.data.generate = "tiny_corpus"
    config.data.corpus = lm.data.corpus
    # Documents about 4000 people (demo.encoder_people) neither the decoder nor the evaluation has seen (the demo writes
    # them with arc_jax.demo.synthetic.write_fresh_people): the decoder cannot fill in memorised
    # facts, so only what the compressed vectors carry lowers the loss.
    config.data.sources = "{data_dir}/fresh_documents.jsonl"
    config.data.strict = False
    config.data.task = "pretrain"
    config.data.max_len = 64
    # The paper's 0.8: each document is continuation with probability 0.8, else reconstruction (a
    # continuation window reads twice the tokens, so about 2/3 of the samples and batches). More
    # continuation reads a little better here (notes/lm_experiments.md), but 1.0 would drop reconstruction.
    config.data.continuation_prob = 0.8
    config.data.chat_template = False
    # The reference's pretraining samples (arc_jax.data.config): every window of a document, no text
    # before the compressed block, BOS / EOS in the encoder's input as the reference, one task a batch.
    config.data.layout = "reference"
    config.data.encoder_bos_eos = True
    config.data.rand_filter = 0.8  # the reference's crawl filter; the demo's documents have no "rand"
    config.data.single_task_batches = True
    config.data.encoder_tokenizer = "{data_dir}/tokenizer.model"
    # Sized with `arc-jax data check` (its proposal, measured on the demo's data): 8 encoder rows left
    # the decoder rows 68% full (useful work 59% of executed); 11 rows of at most 5 contexts filled
    # ~89% of both (77%) and gave more samples a step (ARC4 35.7% -> 53.2% EM, notes/demo_history.md);
    # the texts' spans (<= 64 encoder tokens, <= 81 decoder slots) bound them. Since 2026-12-06 each
    # text is attended alone, in attention rows (arc_jax/model/attention_rows.py) of a group of rows a
    # device (the demo runs on two CPU devices): 19 encoder attention rows of 32-64 slots and 19 decoder ones
    # of 40-88 a group, for the ~16 documents (of 6-64 tokens) and samples a device takes. Attention
    # then no longer depends on the rows' lengths, so one long row a device on each side, which first
    # fit fills more fully. The same ~32.5 samples a batch; useful work 79.5% -> 92.0% of executed
    # (`arc-jax data check --devices 2`, 40 batches of seed 0's data; encoder rows 12 x 128 and decoder
    # rows 8 x 224 before, 83% and 91% full, now 97% and 98%).
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 2, "encoder_len": 664, "decoder_rows": 2, "decoder_len": 840, "max_contexts_per_row": 19,
        "encoder_span": 64, "decoder_span": 81, "loss_slots": 664,
        "encoder_attention_rows": [[2, 32], [5, 40], [12, 64]],
        "decoder_attention_rows": [[3, 40], [4, 48], [4, 56], [8, 88]], "attention_groups": 2})
    config.data.worker_count = 0
    config.data.shards = 0
    config.eval = ml_collections.ConfigDict({"sources": "{data_dir}/pretrain_eval.jsonl", "every": 100, "batches": 2})
    return config
