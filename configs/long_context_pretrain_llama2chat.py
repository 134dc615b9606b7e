"""Pretraining the long-context ARC8-Encoder: a Llama 3.2 3B encoder (26 layers), pooling factor 8,
for a frozen Llama 2 7B Chat, without <Rec>/<Cont> special vectors (SPEC sections 4 and 5; the
paper's context-extension experiment). Stage 1 of 2: long_context_finetune_llama2chat.py follows.

The pretraining tasks inside the Llama 2 Chat template ("[INST] Text:\n\n<C> Repeat the text above
exactly. [/INST]..." / "... Continue the text above. [/INST]..."), otherwise as the released
encoders: reconstruction / continuation on a web crawl (continuation probability 0.8), AdamW
(weight decay 0.1, betas 0.9 / 0.999), one-cycle schedule warming up for 1000 steps to 1e-5
(encoder) and 5e-5 (projector), 80k steps of 128 samples (16 per GPU on 8 GPUs).

Before the first run (ROOT below; every path is an override away, see configs/README.md):

    arc-jax convert ROOT/models/Llama3.2-3B ROOT/encoders/fresh_1head --fresh-encoder --decoder-dims 4096
    arc-jax convert ROOT/models/Llama2-7B-Chat ROOT/decoders/llama2-7b-chat --dtype bfloat16
    arc-jax train --config configs/long_context_pretrain_llama2chat.py \
        --workdir ROOT/runs/long_context_pretrain_llama2chat

The fresh encoder's <Rec>/<Cont> vectors are not used (model.encoder.rec_tok/cont_tok are False).
Every field is described in arc_jax/train/run_config.py.
"""

import ml_collections

from arc_jax.model import presets

# Root of models, data and runs. "{data_dir}" (= config.data.dir) is substituted in data/eval sources
# and tokenizer paths only: --config.data.dir moves those; init_encoder and the decoders' path are
# overridden one by one (--config.init_encoder=..., --config.model.decoders.0.path=...).
ROOT = "/data/arc_jax"
POOLING_FACTOR = 8  # the single place the pooling factor is set (model.encoder.compress_rates = [-8])


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.max_steps = 80_000  # as the released encoders (SPEC section 5)
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.max_bad_steps = 10
    config.log_every = 50
    config.grad_accum = 1  # config.data.shape already holds the paper's 128 samples
    config.compute_dtype = "bfloat16"  # bf16 matmuls; float32 master weights, Adam moments and loss
    # Full rematerialisation: a block keeps only its input for the backward pass, so the activations of
    # 26 + 32 layers fit beside the weights. "dots_no_batch" (keep the weight matmuls' outputs) saves
    # the recomputation when memory allows (fewer rows per device, or a bigger accelerator).
    config.remat_policy = "full"
    config.attention_impl = "jax_nn"  # cuDNN flash attention on GPU; use "splash" on TPU, "xla" on CPU
    # Llama 3.2 3B truncated to 26 layers with a fresh projector (Kaiming uniform).
    config.init_encoder = f"{ROOT}/encoders/fresh_1head"

    config.model = ml_collections.ConfigDict()
    config.model.encoder = ml_collections.ConfigDict(presets.arc_encoder(
        POOLING_FACTOR, 1, presets.LLAMA_2_7B["dim"], special_tokens=False))  # no <Rec>/<Cont>
    config.model.decoders = [ml_collections.ConfigDict({
        "path": f"{ROOT}/decoders/llama2-7b-chat",  # converted with `arc-jax convert` (any format arc_jax reads)
        "backbone": dict(presets.LLAMA_2_7B),  # the expected shape: checked against projector 0 here
        "tokenizer": "{data_dir}/models/Llama2-7B-Chat/tokenizer.model",
        "head": 0,
        "dtype": "bfloat16",
    })]
    # Everything trains: all 26 encoder layers and the token embedding matrix (SPEC section 5).
    config.trainable = ml_collections.ConfigDict({"encoder_layers": -1, "embedding": True})

    # arc_jax.train.optimizer.OptimizerConfig (max_steps comes from config.max_steps). initial_lr and
    # final_lr set torch OneCycleLR's div_factor = encoder_lr / initial_lr and final_div_factor =
    # encoder_lr / final_lr, as the reference's yaml does (1e-20, 1e-10): warm-up from ~0, anneal to ~0.
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 1e-5, "special_lr": 1e-5,  # special_lr unused: no special vectors
        "projector_lr": 5e-5, "weight_decay": 0.1, "warmup_steps": 1000,
        "initial_lr": 1e-20, "final_lr": 1e-10, "clip_norm": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8})
    # (data, fsdp, tensor). FSDP over every device: the trainable encoder (3.0B parameters) in float32
    # with its gradient and Adam moments (~48 GB) plus the bf16 decoder (~13 GB) do not fit replicated
    # on an 80 GB GPU; sharded 8 ways they take ~8 GB a GPU. Several nodes: [n_nodes, -1, 1] (data
    # parallel across nodes, FSDP within one).
    config.mesh_shape = [1, -1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = ROOT
    config.data.sources = "{data_dir}/data/pretrain/crawl_train.jsonl"  # {"text": ...} per line; path[:weight],...
    config.data.strict = False  # bad records are counted and reported, not fatal
    config.data.task = "pretrain"
    config.data.max_len = 256  # prefix / compressed span / continuation, in decoder tokens
    config.data.continuation_prob = 0.8
    config.data.chat_template = True  # the Llama 2 Chat variants of both tasks
    config.data.max_passages = 1  # fine-tuning only
    config.data.encoder_tokenizer = "{data_dir}/models/Llama3.2-3B/tokenizer.model"
    # arc_jax.data.packing.PackingShape: the shape of pretrain_arc8_llama3.py (see the arithmetic
    # there), 128 samples a step on long documents: the chat template adds ~17 text tokens a sample
    # and <Cont>/<Rec> go, and a span of 256 Llama 2 tokens re-tokenises to fewer Llama 3 tokens (the
    # encoder rows fill less); a packing simulation gives 127-128 samples at ~90% decoder fill.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 32, "encoder_len": 1024, "decoder_rows": 32, "decoder_len": 1792, "max_contexts_per_row": 8})
    config.data.worker_count = 4  # grain worker processes per host (tokenisation); 0 = in the main process
    config.data.shards = 0  # one data shard per process

    # Evaluation loss per task on a held-out slice of the crawl.
    config.eval = ml_collections.ConfigDict({
        "sources": "{data_dir}/data/pretrain/crawl_eval.jsonl", "every": 1000, "batches": 4})
    return config
