"""Fine-tuning ARC4-Encoder_multi: the two-decoder ARC8 pretrained encoder (pretrain_arc8_multi.py;
head 0 Llama 3.1 8B, head 1 Mistral 7B) fine-tuned at pooling factor 4 on few-shot context
compression for both decoders (SPEC section 5; "ARC4 multi" of Table 1). Each step draws one decoder
uniformly; the other decoder's head is left untouched. add_olmo.py starts from this run.

Pooling has no parameters, so an encoder pretrained at PF 8 is fine-tuned at PF 4 directly, as the
reference's finetuning_ARC4_* configs do (start from a higher PF, never a lower one). Samples are
interleaved few-shot QA / translation / summarisation: "Document: <C>\\nQuestion: q\\nAnswer: a\\n\\n...",
every document (1-4 passages) compressed, loss on the last answer only. AdamW (weight decay 0.05,
betas 0.9 / 0.999), one-cycle schedule warming up for 50 steps to 2e-6 (encoder) and 3e-5 (projector
and, with several decoders, <Rec>/<Cont>), 8000 steps of 64 samples (8 per GPU on 8 GPUs).

    arc-jax train --config configs/finetune_arc4_multi.py --workdir ROOT/runs/finetune_arc4_multi

To fine-tune the released encoder instead: `arc-jax convert <ARC8_Encoder_multi download>
ROOT/encoders/ARC8_Encoder_multi` and --config.init_encoder=ROOT/encoders/ARC8_Encoder_multi.
Every field is described in arc_jax/train/run_config.py.
"""

import ml_collections

from arc_jax.model import presets

# Root of models, data and runs. "{data_dir}" (= config.data.dir) is substituted in data/eval sources
# and tokenizer paths only: --config.data.dir moves those; init_encoder and the decoders' path are
# overridden one by one (--config.init_encoder=..., --config.model.decoders.0.path=...).
ROOT = "/data/arc_jax"
POOLING_FACTOR = 4  # the single place the pooling factor is set (model.encoder.compress_rates = [-4])

# The paper's fine-tuning mixture (the ARC_finetuning dataset): file:weight:shots, shots being the
# in-context examples drawn from the same file before the question that carries the loss.
FINETUNE_MIXTURE = (
    "adversarialqa.jsonl:8:5", "freebaseqa.jsonl:27:5", "asqa.jsonl:1:5", "msmarco.jsonl:9:5", "sciq.jsonl:3:5",
    "drop.jsonl:20:5", "low_res_short_translation.jsonl:3.5:5", "low_res_mid_translation.jsonl:0.5:2",
    "short_translation.jsonl:6:5", "dialogsum.jsonl:2.5:3", "samsum.jsonl:2.5:4", "wikisum.jsonl:5:5",
    "parasci.jsonl:12:5")


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.max_steps = 8000  # SPEC: 4k-8k; the reference fine-tunes the two-decoder encoder for 8000 steps
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    config.max_bad_steps = 10
    config.log_every = 10
    config.grad_accum = 1  # config.data.shape already holds the 64 samples of a step
    config.compute_dtype = "bfloat16"  # bf16 matmuls; float32 master weights, Adam moments and loss
    # Full rematerialisation: a block keeps only its input for the backward pass ("dots_no_batch"
    # keeps the weight matmuls' outputs too: faster, when memory allows).
    config.remat_policy = "full"
    config.attention_impl = "jax_nn"  # cuDNN flash attention on GPU; use "splash" on TPU, "xla" on CPU
    # The pretraining run's workdir (its latest checkpoint); any encoder format arc_jax reads works too.
    config.init_encoder = f"{ROOT}/runs/pretrain_arc8_multi"

    config.model = ml_collections.ConfigDict()
    config.model.encoder = ml_collections.ConfigDict(presets.arc_encoder(
        POOLING_FACTOR, 2, [presets.LLAMA_3_1_8B["dim"], presets.MISTRAL_7B_V03["dim"]]))
    config.model.decoders = [
        ml_collections.ConfigDict({
            "path": f"{ROOT}/decoders/llama3.1-8b",  # converted with `arc-jax convert` (any format arc_jax reads)
            "backbone": dict(presets.LLAMA_3_1_8B),  # the expected shape: checked against projector 0 here
            "tokenizer": "{data_dir}/models/Llama3.1-8B/tokenizer.model",
            "head": 0,
            "dtype": "bfloat16",
        }),
        ml_collections.ConfigDict({
            "path": f"{ROOT}/decoders/mistral-7b-v0.3",
            "backbone": dict(presets.MISTRAL_7B_V03),
            "tokenizer": "{data_dir}/models/Mistral-7B-v0.3/tokenizer.model.v3",
            "head": 1,
            "dtype": "bfloat16",
        }),
    ]
    config.trainable = ml_collections.ConfigDict({"encoder_layers": -1, "embedding": True})

    # arc_jax.train.optimizer.OptimizerConfig; initial_lr / final_lr as the reference's fine-tuning
    # yaml (torch OneCycleLR div factors encoder_lr / 1e-20 and encoder_lr / 1e-8). <Rec>/<Cont> at
    # the projector's rate with several decoders (SPEC section 5).
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 2e-6, "special_lr": 3e-5, "projector_lr": 3e-5, "weight_decay": 0.05, "warmup_steps": 50,
        "initial_lr": 1e-20, "final_lr": 1e-8, "clip_norm": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8})
    # (data, fsdp, tensor): FSDP over every device (see pretrain_arc8_multi.py for the memory).
    config.mesh_shape = [1, -1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = ROOT
    config.data.sources = ",".join(f"{{data_dir}}/data/finetune/{entry}" for entry in FINETUNE_MIXTURE)
    config.data.strict = False  # bad records are counted and reported, not fatal
    config.data.task = "finetune"
    config.data.max_len = 1024  # encoder tokens kept of a document (the reference's multi-decoder seq_len)
    config.data.continuation_prob = 0.0  # pretraining only
    config.data.chat_template = False
    config.data.max_passages = 4  # up to 4 passages of a record compressed jointly as one document
    config.data.encoder_tokenizer = "{data_dir}/models/Llama3.2-3B/tokenizer.model"
    # arc_jax.data.packing.PackingShape for ~64 samples a step (8 a GPU, as the reference's batch 8
    # per rank on 8 GPUs). A sample is up to 6 examples (5 shots + the question), each a document of
    # 1-4 passages around "Document:", question and answer text. Estimated on this mixture (measure
    # yours with `arc-jax data check`): ~2000 encoder tokens and, at PF 4, ~800 decoder slots a sample,
    # so 128 rows x 1024 (131k encoder slots, up to 8 documents a row) and 16 rows x 3584 (57k decoder
    # slots) hold ~62 samples (a packing simulation: ~98% encoder, ~88% decoder fill). The longest
    # sample, 6 documents of 1024 tokens (6 x 256 vectors + text), fits a 3584-slot row. One shape
    # serves both decoders (a step's batch is tokenised for the decoder drawn for it).
    # 8 GPUs: 16 encoder + 2 decoder rows each.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 128, "encoder_len": 1024, "decoder_rows": 16, "decoder_len": 3584, "max_contexts_per_row": 8})
    config.data.worker_count = 4  # grain worker processes per host (tokenisation); 0 = in the main process
    config.data.shards = 0  # one data shard per process

    # No held-out evaluation, as the reference's fine-tuning runs; to add one, e.g.
    # --config.eval.sources={data_dir}/data/finetune_eval/nq.jsonl:1:5 --config.eval.every=500
    config.eval = ml_collections.ConfigDict({"sources": "", "every": 0, "batches": 4})
    return config
