"""Fine-tuning the long-context ARC8-Encoder for Llama 2 7B Chat: stage 2 of 2 after
long_context_pretrain_llama2chat.py (SPEC section 5, "Long context"; the paper's context-extension
experiment, e.g. NarrativeQA and Qasper through Llama 2's 4k window).

A record {"text", "instruction", "answer"} becomes one sample: the document cut into up to 32 chunks
of 1024 encoder tokens, each compressed on its own (8x: <= 4096 vectors), the compressed chunks
concatenated inside "[INST] Text:\n\n<C...C> {instruction} [/INST] {answer}", loss on the answer;
no <Rec>/<Cont>. The SPEC gives no rates for this stage: the other fine-tunes' are used, AdamW
(weight decay 0.05, betas 0.9 / 0.999), one-cycle schedule warming up for 50 steps to 2e-6 (encoder)
and 3e-5 (projector), 4000 steps of 8 to ~20 samples (8 documents of 32k tokens, more when shorter).

    arc-jax train --config configs/long_context_finetune_llama2chat.py \
        --workdir ROOT/runs/long_context_finetune_llama2chat

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
    config.max_steps = 4000  # the low end of the SPEC's fine-tuning 4k-8k (no number for this stage)
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    config.max_bad_steps = 10
    config.log_every = 10
    config.grad_accum = 1  # config.data.shape holds 8 full-length documents a step
    config.compute_dtype = "bfloat16"  # bf16 matmuls; float32 master weights, Adam moments and loss
    # Full rematerialisation: a block keeps only its input for the backward pass ("dots_no_batch"
    # keeps the weight matmuls' outputs too: faster, when memory allows).
    config.remat_policy = "full"
    config.attention_impl = "jax_nn"  # cuDNN flash attention on GPU; use "splash" on TPU, "xla" on CPU
    # The long-context pretraining run's workdir (its latest checkpoint).
    config.init_encoder = f"{ROOT}/runs/long_context_pretrain_llama2chat"

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
    config.trainable = ml_collections.ConfigDict({"encoder_layers": -1, "embedding": True})

    # arc_jax.train.optimizer.OptimizerConfig; initial_lr / final_lr as the reference's fine-tuning
    # yaml (torch OneCycleLR div factors encoder_lr / 1e-20 and encoder_lr / 1e-8).
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 2e-6, "special_lr": 2e-6,  # special_lr unused: no special vectors
        "projector_lr": 3e-5, "weight_decay": 0.05, "warmup_steps": 50,
        "initial_lr": 1e-20, "final_lr": 1e-8, "clip_norm": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8})
    # (data, fsdp, tensor): FSDP over every device (see pretrain_arc8_llama3.py for the memory).
    config.mesh_shape = [1, -1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = ROOT
    config.data.sources = "{data_dir}/data/long_context/train.jsonl"  # {"text", "instruction", "answer"}
    config.data.strict = False  # bad records are counted and reported, not fatal
    config.data.task = "long_context"
    config.data.max_len = 1024  # not read by long_context: its chunks are 1024 tokens, at most 32 a document
    config.data.continuation_prob = 0.0  # pretraining only
    config.data.chat_template = False  # pretraining only: long_context always uses the template
    config.data.max_passages = 1  # fine-tuning (few-shot) only
    config.data.encoder_tokenizer = "{data_dir}/models/Llama3.2-3B/tokenizer.model"
    # arc_jax.data.packing.PackingShape. A document of 32k tokens takes 32 encoder rows of 1024 and
    # 32 x 128 = 4096 vectors + ~60 template and instruction tokens + the answer in the decoder, so
    # 8 documents a step need 256 encoder rows and 8 decoder rows of 4608 (a full document runs past
    # Llama 2's 4096 positions, as the paper's 32 chunks of 1024 at 8x do; use decoder_len 4096 to
    # drop such samples instead: they are counted). Shorter documents pack several to a row (a
    # packing simulation with documents of ~12k tokens gives ~18 samples a step, 92-99% fill).
    # 8 GPUs: 32 encoder rows (32k tokens) + 1 decoder row each; 16 GPUs need decoder_rows 16.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 256, "encoder_len": 1024, "decoder_rows": 8, "decoder_len": 4608, "max_contexts_per_row": 4})
    config.data.worker_count = 4  # grain worker processes per host (tokenisation); 0 = in the main process
    config.data.shards = 0  # one data shard per process

    # No held-out evaluation by default; to add one (same record format), e.g.
    # --config.eval.sources={data_dir}/data/long_context/eval.jsonl --config.eval.every=500
    config.eval = ml_collections.ConfigDict({"sources": "", "every": 0, "batches": 4})
    return config
