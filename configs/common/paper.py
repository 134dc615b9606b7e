"""The paper's two training recipes, pretraining and fine-tuning, shared by the run files in configs/.

Not a config itself (it sits in a subfolder, out of tests/test_configs.py's list of configs). arc_jax
loads a config file by path, so a config imports only installed modules: a run file takes its recipe
with `run_path(Path(__file__).parent / "common" / "paper.py")["pretraining"]` (or "finetuning"),
calls it for its decoder(s), pooling factor and starting point, and then sets only what its run
changes. Every field is described in arc_jax/train/run_config.py; configs/README.md tables the runs.
"""

import ml_collections

from arc_jax.model import presets

# Root of models, data and runs (the layout is in configs/README.md). "{data_dir}" (= config.data.dir)
# is substituted in data/eval sources and tokenizer paths only: --config.data.dir moves those;
# init_encoder and the decoders' path are overridden one by one (--config.init_encoder=...,
# --config.model.decoders.0.path=...).
ROOT = "/data/arc_jax"

# The frozen decoders, by the name of their converted weights ROOT/decoders/<name> (`arc-jax convert
# ROOT/models/<download> ROOT/decoders/<name> --dtype bfloat16`): their shape and their tokenizer
# under ROOT/models.
DECODERS = {
    "llama3.1-8b": (presets.LLAMA_3_1_8B, "Llama3.1-8B/tokenizer.model"),
    "mistral-7b-v0.3": (presets.MISTRAL_7B_V03, "Mistral-7B-v0.3/tokenizer.model.v3"),
    "llama2-7b-chat": (presets.LLAMA_2_7B, "Llama2-7B-Chat/tokenizer.model"),
    "olmo-7b": (presets.OLMO_7B, "OLMo-7B-hf/tokenizer.json"),  # allenai/OLMo-7B-hf
    "qwen3-8b": (presets.QWEN3_8B, "Qwen3-8B/tokenizer.json"),  # Qwen/Qwen3-8B (its own tokenizer: retokenized)
}

# Encoder backbones, by the name of their download under ROOT/models: shape and tokenizer. The paper's
# is Llama 3.2 3B; Llama 3.2 1B is the 1B-class one (the same tokenizer as Llama 3.1 8B).
ENCODERS = {
    "llama3.2-3b": (presets.LLAMA_3_2_3B, "Llama3.2-3B/tokenizer.model"),
    "llama3.2-1b": (presets.LLAMA_3_2_1B, "Llama3.2-1B/tokenizer.model"),
}

# The paper's fine-tuning mixture (the ARC_finetuning dataset): file:weight:shots, shots being the
# in-context examples drawn from the same file before the question that carries the loss.
FINETUNE_MIXTURE = (
    "adversarialqa.jsonl:8:5", "freebaseqa.jsonl:27:5", "asqa.jsonl:1:5", "msmarco.jsonl:9:5", "sciq.jsonl:3:5",
    "drop.jsonl:20:5", "low_res_short_translation.jsonl:3.5:5", "low_res_mid_translation.jsonl:0.5:2",
    "short_translation.jsonl:6:5", "dialogsum.jsonl:2.5:3", "samsum.jsonl:2.5:4", "wikisum.jsonl:5:5",
    "parasci.jsonl:12:5")


def pretraining(decoders: list[str], pooling_factor: int, init_encoder: str,
                encoder: str = "llama3.2-3b") -> ml_collections.ConfigDict:
    """Pretraining: reconstruction / continuation on a web crawl (continuation probability 0.8),
    AdamW as the reference's train.py (weight decay 0.1, beta2 0.95, eps 1e-8, beta1 cycled by the
    one-cycle schedule 0.95 -> 0.85 -> 0.95), one-cycle schedule warming up for 1000 steps to 1e-5
    (encoder, <Rec>, <Cont>) and 5e-5 (projector), 80k steps of 128 samples (16 per GPU on 8 GPUs,
    ~2.6B tokens). Everything trains: all 26 encoder layers and the token embedding matrix.

    `decoders`: names in DECODERS, decoders[i] served by encoder head i; with several, each step draws
    one uniformly (decoder_schedule "random") and updates the shared encoder and that decoder's
    projector and <Rec>/<Cont>.
    `init_encoder`: under ROOT, e.g. "encoders/fresh_1head" (`arc-jax convert ... --fresh-encoder`:
    Llama 3.2 3B truncated to 26 layers, fresh <Rec>/<Cont> (ones) and projectors (Kaiming uniform)).
    `encoder`: the backbone, a name in ENCODERS (the paper's Llama 3.2 3B by default)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    # The released encoders: 80k steps, ~2.6B tokens (paper Table 10; the reference's README says 2.6B
    # tokens and load_and_save_released_models stores them as checkpoint_080000). The reference's
    # example yaml (pretraining_ARC8_Encoder_llama.yaml) says 100k: --config.max_steps=100000.
    config.max_steps = 80_000
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.max_bad_steps = 10
    config.log_every = 50
    config.grad_accum = 1  # config.data.shape already holds all the samples of a step
    config.compute_dtype = "bfloat16"  # bf16 matmuls; float32 master weights, Adam moments and loss
    # Rematerialisation keeping the weight matmuls' outputs and the fused attention kernel's
    # ("dots_no_batch_attention", arc_jax/model/stack.py): the backward pass recomputes a block's norms,
    # RoPE and SwiGLU but neither its weight matmuls nor its attention. One H200
    # (bench_gpu_real_shapes.py: a quarter of this step's rows) ran the step in 908 ms with
    # "dots_no_batch" against 1,081 ms with "full" (which keeps only a block's input), and in 881 ms
    # with this policy on another H200 (cuDNN's forward ran once a layer instead of twice: attention
    # 142 ms instead of 173). Peaks from `arc-jax plan`: 8 H100s (4 + 4 rows each, FSDP) 31.1 GiB a GPU
    # against 15.4 with "full" (plus the saved attention outputs, ~2 GB, which plan's XLA attention does
    # not show); v5p-64 with splash 12.0 GiB against 4.1, and 83.2 GiB of collectives a device against
    # 71.6 (XLA's collective-permute matmuls over the FSDP weight shards; counted at 7e66fa9): ICI
    # bounds of 149 and 127 ms, both above the 121 ms compute bound, which "full" raises by its
    # recomputation; not measured on a TPU.
    # --config.remat_policy=full where memory is short. Fine-tuning's longer rows use "full".
    config.remat_policy = "dots_no_batch_attention"
    config.attention_impl = "jax_nn"  # cuDNN flash attention on GPU; use "splash" on TPU, "xla" on CPU
    config.init_encoder = f"{ROOT}/{init_encoder}"  # any encoder format arc_jax reads, or a run's workdir
    # With several decoders: one drawn per step with probabilities decoder_weights (equal: the paper's
    # "sample a decoder uniformly at each step", the reference's default prob_forward). Multi-decoder
    # fine-tuning alternates instead (finetune_arc4_multi.py).
    config.decoder_schedule = "random"
    config.decoder_weights = []  # one weight per decoder, e.g. --config.decoder_weights=[3,1]; [] = equal

    config.model = ml_collections.ConfigDict()
    encoder_backbone, encoder_tokenizer = ENCODERS[encoder]
    config.model.encoder = ml_collections.ConfigDict(presets.arc_encoder(
        pooling_factor, len(decoders), [DECODERS[name][0]["dim"] for name in decoders], backbone=encoder_backbone))
    config.model.decoders = [decoder_config(name, head) for head, name in enumerate(decoders)]
    config.trainable = ml_collections.ConfigDict({"encoder_layers": -1, "embedding": True})

    # arc_jax.train.optimizer.OptimizerConfig (max_steps comes from config.max_steps). initial_lr and
    # final_lr set torch OneCycleLR's div_factor = encoder_lr / initial_lr and final_div_factor =
    # encoder_lr / final_lr, as the reference's yaml does (1e-20, 1e-10): warm-up from ~0, anneal to ~0.
    # <Rec>/<Cont> at the encoder's rate: the reference trains them in its encoder group (train.py
    # L258-271). AdamW as reference train.py L272: betas (0.9, 0.95), eps 1e-8, and its OneCycleLR
    # (cycle_momentum=True by default) replaces beta1 at every step: "one_cycle", 0.95 -> 0.85 over the
    # warm-up -> 0.95 at the end (b1 unused). b1_schedule="constant" keeps beta1 = b1 (arc_jax's former
    # recipe: b1 0.9, b2 0.999).
    config.optimizer = ml_collections.ConfigDict({
        "encoder_lr": 1e-5, "special_lr": 1e-5, "projector_lr": 5e-5, "weight_decay": 0.1, "warmup_steps": 1000,
        "initial_lr": 1e-20, "final_lr": 1e-10, "clip_norm": 1.0, "b1": 0.9, "b2": 0.95, "eps": 1e-8,
        "b1_schedule": "one_cycle", "b1_min": 0.85, "b1_max": 0.95})
    # (data, fsdp, tensor). FSDP over every device: the trainable encoder (3.0B parameters) in float32
    # with its gradient and Adam moments (~48 GB) plus the bf16 decoder(s) (Llama 2 7B ~13 GB, Mistral
    # 7B ~15 GB, Llama 3.1 8B ~16 GB, the last two together ~31 GB) do not fit replicated on an 80 GB
    # GPU; sharded 8 ways they take ~8-10 GB a GPU. Several nodes: [n_nodes, -1, 1] (data parallel
    # across nodes, FSDP within one).
    config.mesh_shape = [1, -1, 1]

    config.data = ml_collections.ConfigDict()
    config.data.dir = ROOT
    config.data.sources = "{data_dir}/data/pretrain/crawl_train.jsonl"  # {"text": ...} per line; path[:weight],...
    config.data.strict = False  # bad records are counted and reported, not fatal
    config.data.task = "pretrain"
    config.data.max_len = 256  # prefix / compressed span / continuation, in decoder tokens
    config.data.continuation_prob = 0.8  # drawn per document (about 2/3 of windows and batches)
    # The released code's samples (configs/README.md, "Pretraining samples"): consecutive windows,
    # nothing before the compressed block, BOS/EOS where the document has them, one task a batch,
    # crawl records with rand >= 0.8 skipped. layout="arc_jax" is the earlier random-prefix layout.
    config.data.layout = "reference"
    config.data.encoder_bos_eos = True
    config.data.rand_filter = 0.8
    config.data.single_task_batches = True
    config.data.chat_template = False  # pretraining inside the Llama 2 Chat template (long context)
    config.data.max_passages = 1  # fine-tuning only
    config.data.encoder_tokenizer = f"{{data_dir}}/models/{encoder_tokenizer}"
    # arc_jax.data.packing.PackingShape, sized for the paper's 128 samples a step on long documents.
    # Encoder: a sample compresses <= 256 tokens, so 32 rows x 1024 = 128 x 256 slots (4 full contexts
    # a row, up to 8 shorter ones). Decoder: a sample of the reference layout takes at most 256 + 32 +
    # 1 = 289 slots (continuation, pooled span, <Cont>), so a row of 1232 holds 4 full ones (1156)
    # and the rows hold the 128 full samples a step the encoder does; documents' shorter last windows
    # make more, smaller samples. The output head runs on a loss buffer of 1136 slots a row (4 full
    # samples carry 1024 loss tokens; rows of shorter ones up to 1090 in the check below; a sample that
    # does not fit waits for the next batch). `arc-jax data check` on data shaped
    # like the paper's (arc_jax/tools/paper_shaped_data.py, 20 batches, 151 samples a batch either
    # way): useful FLOPs 66.6% of executed with rows of 1792 and no buffer, 87.2% with rows of 1232,
    # 90.1% with the buffer; the rows are 93% full. The earlier arc_jax layout (a 0..256 prefix before
    # the block, ~392 slots a sample) fits 3 a row: use decoder_len 1792 with it. PF 4
    # (compress_rates [-4]) adds 32 vectors a sample: decoder_len 1296 keeps 4 a row. 8 GPUs: 4 + 4
    # rows each; the rows divide 8, 16 and 32 devices. `arc-jax data check --config ...` reports the
    # real numbers on your data. With several decoders, a step's batch is tokenised for the decoder
    # drawn for it.
    config.data.shape = ml_collections.ConfigDict({
        "encoder_rows": 32, "encoder_len": 1024, "decoder_rows": 32, "decoder_len": 1232, "max_contexts_per_row": 8,
        "loss_slots": 1136,
        # Attention rows (arc_jax/model/attention_rows.py), off: [[count, length], ...] a group of rows.
        "encoder_attention_rows": [], "decoder_attention_rows": [], "attention_groups": 1,
        # Spans (arc_jax/data/packing.py), off: every field is here for `arc-jax data check`'s proposals.
        "encoder_span": 0, "decoder_span": 0})
    config.data.worker_count = 4  # grain worker processes per host (tokenisation); 0 = in the main process
    config.data.shards = 0  # one data shard per process

    # Evaluation loss per task on a held-out slice of the crawl.
    config.eval = ml_collections.ConfigDict({
        "sources": "{data_dir}/data/pretrain/crawl_eval.jsonl", "every": 1000, "batches": 4})
    return config


def finetuning(decoders: list[str], pooling_factor: int, init_encoder: str,
               shape: dict[str, int]) -> ml_collections.ConfigDict:
    """Fine-tuning on few-shot context compression ("ARC4" / "ARC8" of Table 1): pretraining() with
    the fine-tuning task, rates and length. Samples are interleaved few-shot QA / translation /
    summarisation in the reference's layout (arc_jax.prompts.few_shot: "Document: <C>\\nQuestion: q\\n
    Answer: a\\n\\nDocument: ..."), every document (1-4 passages) compressed, loss on the last answer. AdamW as pretraining (beta2 0.95, beta1 cycled) with
    weight decay 0.05, one-cycle schedule warming up for 50 steps to 2e-6 (encoder, <Rec>, <Cont>)
    and 3e-5 (projector), 4000 steps of ~64 samples (8 per GPU on 8 GPUs); no held-out evaluation,
    as the reference's runs.

    `init_encoder`: under ROOT, the earlier run's workdir (e.g. "runs/pretrain_arc8_llama3": its latest
    checkpoint). `shape`: the run's config.data.shape, sized for its pooling factor and data.max_len."""
    config = pretraining(decoders, pooling_factor, init_encoder)
    config.max_steps = 4000  # the paper: 4k-8k; the reference fine-tunes one-decoder encoders for 4000 steps
    config.remat_policy = "full"  # rows of 4096 slots: on v5e-16 they peak at 10.5 of 16 GiB a chip even so
    config.checkpoint_every = 500
    config.log_every = 10
    # initial_lr / final_lr as the reference's fine-tuning yaml (div factors encoder_lr / 1e-20 and
    # encoder_lr / 1e-8).
    config.optimizer.update({"encoder_lr": 2e-6, "special_lr": 2e-6, "projector_lr": 3e-5, "weight_decay": 0.05,
                             "warmup_steps": 50, "final_lr": 1e-8})

    config.data.sources = ",".join(f"{{data_dir}}/data/finetune/{entry}" for entry in FINETUNE_MIXTURE)
    config.data.task = "finetune"
    # Encoder tokens kept of each passage: the reference's 5 x seq_len (seq_len 2048; its interleaved
    # fine-tuning caps passages there, not documents). A document longer than shape.encoder_len is
    # still cut to it when packed, and counted ("context_truncated" in `arc-jax data check`).
    config.data.max_len = 5 * 2048
    config.data.continuation_prob = 0.0  # pretraining only
    config.data.max_passages = 4  # up to 4 passages of a record compressed jointly as one document
    config.data.answer_layout = "reference"  # "\nAnswer: " then the answer alone, as the reference trains
    # For ~64 samples a step (8 a GPU, as the reference's batch 8 per rank on 8 GPUs). A sample is up to
    # 6 examples (5 shots + the question), each a document of 1-4 passages around "Document:", question
    # and answer text: ~2000 encoder tokens and ~550 (PF 8) or ~800 (PF 4) decoder slots a sample,
    # estimated on this mixture (measure yours with `arc-jax data check`). A decoder row holds the longest
    # sample, 6 documents of shape.encoder_len. The output head runs on a loss buffer of 512 slots a row
    # (unless `shape` sets loss_slots): a sample's loss is its last answer and EOS, 351 tokens at most
    # in 100 batches of data shaped like the paper's (arc_jax/tools/paper_shaped_data.py), up to 547
    # a row against 2560-4096 slots; a sample with more is dropped and counted
    # ("sample_too_many_loss_tokens"), one that no row has room for waits. Measured there (`arc-jax data
    # check`'s counts, 40 batches, the same samples either way): useful FLOPs 78.1% -> 80.2% of executed
    # (finetune_arc4_llama3), 85.9% -> 87.6% (finetune_arc8_llama3), 86.0% -> 88.2% (finetune_arc4_multi).
    config.data.shape = ml_collections.ConfigDict({"loss_slots": 512, "encoder_attention_rows": [],
                                                   "decoder_attention_rows": [], "attention_groups": 1,
                                                   "encoder_span": 0, "decoder_span": 0, **shape})

    # No held-out evaluation, as the reference's fine-tuning runs; to add one, e.g.
    # --config.eval.sources={data_dir}/data/finetune_eval/nq.jsonl:1:5 --config.eval.every=500
    config.eval = ml_collections.ConfigDict({"sources": "", "every": 0, "batches": 4})
    return config


def decoder_config(name: str, head: int) -> ml_collections.ConfigDict:
    """config.model.decoders entry of DECODERS[name], served by encoder head `head`."""
    backbone, tokenizer = DECODERS[name]
    return ml_collections.ConfigDict({
        "path": f"{ROOT}/decoders/{name}",  # converted with `arc-jax convert` (any format arc_jax reads)
        "backbone": dict(backbone),  # the expected shape: checked against projector `head` here
        "tokenizer": f"{{data_dir}}/models/{tokenizer}",
        "head": head,
        "dtype": "bfloat16",
    })
