"""Adding a new decoder, OLMo 7B, to a trained encoder: the fine-tuned ARC4-Encoder_multi
(finetune_arc4_multi.py, heads 0 Llama 3.1 8B and 1 Mistral 7B) gets a third head for OLMo; the
encoder is frozen and only the new projector (3072 -> 2048 -> 4096) and its <Rec>/<Cont> vectors
train (SPEC section 5, "New decoder"; the paper's OLMo experiment).

Pooling factor 4 on the few-shot fine-tuning mixture, as the encoder was fine-tuned. The SPEC gives
no rates for this run: these are the reference's finetuning_to_add_OLMo yaml: AdamW (weight decay
0.05, betas 0.9 / 0.999), one-cycle schedule warming up for 100 steps to 1e-4 (projector and special
vectors), 8000 steps of 64 samples (8 per GPU on 8 GPUs).

    arc-jax convert ROOT/models/OLMo-7B-hf ROOT/decoders/olmo-7b --dtype bfloat16
    arc-jax train --config configs/add_olmo.py --workdir ROOT/runs/add_olmo

The trainer starts heads 0 and 1 and the encoder from init_encoder and makes head 2 fresh (<Rec>/
<Cont> = ones, projector initialised like torch.nn.Linear); heads 0 and 1 are saved unchanged, so
the result serves all three decoders. Every field is described in arc_jax/train/run_config.py.
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
    config.max_steps = 8000  # the reference's finetuning_to_add_OLMo yaml
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
    # The fine-tuned two-decoder encoder (its run's workdir, latest checkpoint): encoder and heads 0, 1.
    config.init_encoder = f"{ROOT}/runs/finetune_arc4_multi"

    config.model = ml_collections.ConfigDict()
    # Three heads, in the order of the encoder being extended: 0 Llama 3.1 8B, 1 Mistral 7B, 2 OLMo 7B.
    config.model.encoder = ml_collections.ConfigDict(presets.arc_encoder(
        POOLING_FACTOR, 3, [presets.LLAMA_3_1_8B["dim"], presets.MISTRAL_7B_V03["dim"], presets.OLMO_7B["dim"]]))
    # Only the new decoder is loaded: this run trains head 2 alone.
    config.model.decoders = [ml_collections.ConfigDict({
        "path": f"{ROOT}/decoders/olmo-7b",  # converted with `arc-jax convert` (allenai/OLMo-7B-hf)
        "backbone": dict(presets.OLMO_7B),  # the expected shape: checked against projector 2 here
        "tokenizer": "{data_dir}/models/OLMo-7B-hf/tokenizer.json",
        "head": 2,
        "dtype": "bfloat16",
    })]
    # The encoder is frozen: no encoder layer and not its embedding matrix train.
    config.trainable = ml_collections.ConfigDict({"encoder_layers": 0, "embedding": False})

    # arc_jax.train.optimizer.OptimizerConfig. encoder_lr trains nothing here (the encoder is frozen)
    # but sets the one-cycle shape: div factors encoder_lr / initial_lr and encoder_lr / final_lr.
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 1e-4, "special_lr": 1e-4, "projector_lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 100,
        "initial_lr": 1e-20, "final_lr": 1e-8, "clip_norm": 1.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8})
    # (data, fsdp, tensor): FSDP over every device, which shards the frozen weights too.
    config.mesh_shape = [1, -1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = ROOT
    config.data.sources = ",".join(f"{{data_dir}}/data/finetune/{entry}" for entry in FINETUNE_MIXTURE)
    config.data.strict = False  # bad records are counted and reported, not fatal
    config.data.task = "finetune"
    config.data.max_len = 1024  # encoder tokens kept of a document (the reference's seq_len for this run)
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
    # sample, 6 documents of 1024 tokens (6 x 256 vectors + text), fits a 3584-slot row. Same shape
    # as finetune_arc4_multi.py; a frozen encoder needs no gradient or Adam moments, so memory is ample.
    # 8 GPUs: 16 encoder + 2 decoder rows each.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 128, "encoder_len": 1024, "decoder_rows": 16, "decoder_len": 3584, "max_contexts_per_row": 8})
    config.data.worker_count = 4  # grain worker processes per host (tokenisation); 0 = in the main process
    config.data.shards = 0  # one data shard per process

    # No held-out evaluation, as the reference's fine-tuning runs; to add one, e.g.
    # --config.eval.sources={data_dir}/data/finetune_eval/nq.jsonl:1:5 --config.eval.every=500
    config.eval = ml_collections.ConfigDict({"sources": "", "every": 0, "batches": 4})
    return config
