"""The CPU demo's decoder LM (stage 2 of `arc-jax demo`), trained from scratch by
arc_jax.demo.decoder_lm.train_lm.

Data: the synthetic people corpus (arc_jax.demo.synthetic.build_tiny_data(data.dir, **data.corpus),
generated on first use when data.generate == "tiny_corpus"). Training text, packed into `rows` x
`seq_len` batches:
- the corpus's pretraining documents (about the training people) at loss weight `document_weight`;
- open-book QA episodes in the evaluation harness's exact prompt format ("Document: ...\nQuestion:
  ...\nAnswer: ..."), 70% with no shot and 30% with one, about `fresh_people` new random people
  every epoch whose documents state 1..6 of their attributes: answers cannot be memorised, only
  read; loss on the answers only (`qa_prompt_weight` 0: the documents' random names, towns and
  numbers are noise to a model that must learn to look things up).
The learning rate, the answers-only loss, the 0- and 1-shot episodes and the fresh people are what
makes a model this small look answers up in the document instead of guessing by answer type (the
sizing runs and their numbers are in notes/lm_experiments.md). Every answer is one piece of the
tokenizer (vocabulary 1536, digits merged, never with the punctuation after them: towns from a list
of 24, years and heights from ranges of 24): the recipe reads one-piece answers reliably and did not
learn to copy multi-piece ones.

`model` is BackboneConfig.from_dict input; its vocab_size must cover the tokenizer's. `demo` holds
what the ARC stages take from this file (configs/demo_arc_pretrain.py).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # Long enough for the decoder to read numbers as well as words (notes/lm_experiments.md).
    config.max_steps = 1800
    # The layer stack compiled without a loop (same parameters): 0.93x the step time (A/B, 5 x 4 steps).
    config.unroll_layers = True
    config.log_every = 100
    config.checkpoint_every = 500
    config.keep_checkpoints = 2
    # Held-out open-book answers, teacher forced (greedy exact match without the stop rule), every
    # probe_every steps on probe_examples probe_shots-shot episodes about the held-out people.
    config.probe_every = 500
    config.probe_examples = 60
    config.probe_shots = 1

    vocab_size = ml_collections.FieldReference(1536)
    config.model = ml_collections.ConfigDict({
        "dim": 128, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "head_dim": 32, "hidden_dim": 384,
        "vocab_size": vocab_size, "rope_theta": 10000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm",
        "rope_scaling": None})

    # arc_jax.train.optimizer.OptimizerConfig: lr is the decoder's max rate (one-cycle).
    config.optimizer = ml_collections.ConfigDict({
        "lr": 2e-3, "weight_decay": 0.1, "warmup_steps": 80, "initial_lr": 3e-4, "final_lr": 3e-6,
        "clip_norm": 1.0, "b1": 0.9, "b2": 0.95})

    config.data = ml_collections.ConfigDict()
    config.data.dir = "~/.cache/arc_jax/tiny_cpu"
    config.data.generate = "tiny_corpus"
    config.data.corpus = ml_collections.ConfigDict({
        "seed": 0, "n_entities": 300, "held_out": 60, "pretrain_copies": 2, "vocab_size": vocab_size,
        # False: BPE merges digits, so every year and height is one piece at this vocabulary, as the
        # decoder reads one-piece answers but not digit-by-digit numbers (notes/lm_experiments.md).
        "split_digits": False})
    config.data.seq_len = 256  # a 1-shot episode is ~100-200 tokens
    config.data.rows = 6
    config.data.shots = 1
    config.data.min_shots = 1
    config.data.zero_shot_prob = 0.7
    config.data.qa_episodes_per_epoch = 0  # 0: every QA record once per epoch
    config.data.fresh_people = 600
    config.data.min_attributes = 1
    config.data.curriculum = ()
    config.data.counterfactual_prob = 0.0
    config.data.document_weight = 0.1
    config.data.qa_prompt_weight = 0.0  # loss weight of QA prompt tokens (answers: 1)

    # Read by configs/demo_arc_pretrain.py and arc_jax/demo/run.py: the encoder is this model's layers
    # minus the last `truncated_layers`, with a projector of `projector_hidden`.
    # `encoder_people`: the new people whose documents the ARC pretraining reads; `finetune_people`:
    # other new people the fine-tuning asks about, each on a document stating a random number (at least
    # `finetune_min_attributes`) of their six attributes (arc_jax.demo.synthetic.write_fresh_people).
    # More people, same steps: fewer repeats of a person's questions; 1500 -> 4000 (then the
    # pretraining's people, all six attributes) took ARC4 from 53.2% to 76.9% EM (seed 0). Documents
    # of 1 to 6 attributes, some with one fact only to read, teach every attribute sooner: on the same
    # pretrained encoders ARC4 went from 79.7 / 68.6 / 98.9% (seeds 0 / 1 / 2; the six attributes
    # about the pretraining's 4000 people) to 90.6 / 85.6 / 99.2% at 83ceaf4 (the README has today's).
    config.demo = ml_collections.ConfigDict({"truncated_layers": 0, "projector_hidden": 256, "encoder_people": 4000,
                                             "finetune_people": 7000, "finetune_min_attributes": 1})
    return config
