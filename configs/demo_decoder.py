"""The CPU demo's decoder LM, trained from scratch by arc_jax.train.lm.train_lm (issue 6, step 2).

Data: the synthetic people corpus (arc_jax.data.synthetic.build_tiny_data(data.dir, **data.corpus),
generated on first use when data.generate == "tiny_corpus"). Training text: pretraining documents
and `shots`+1-record open-book QA episodes in the harness's exact prompt format, packed into
`rows` x `seq_len` batches (an episode is ~620 tokens with 5 shots, at most ~790: seq_len 768 truncates a rare few).
`model` is BackboneConfig.from_dict input; its vocab_size must cover the tokenizer's.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.max_steps = 800
    config.log_every = 100
    config.checkpoint_every = 400
    config.keep_checkpoints = 2

    vocab_size = ml_collections.FieldReference(1024)
    config.model = ml_collections.ConfigDict({
        "dim": 128, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "head_dim": 32, "hidden_dim": 384,
        "vocab_size": vocab_size, "rope_theta": 10000.0, "norm_eps": 1e-5, "norm_type": "rmsnorm",
        "rope_scaling": None})

    # arc_jax.train.optimizer.OptimizerConfig: lr is the decoder's max rate (one-cycle).
    config.optimizer = ml_collections.ConfigDict({
        "lr": 5e-3, "weight_decay": 0.1, "warmup_steps": 80, "initial_lr": 3e-4, "final_lr": 3e-5,
        "clip_norm": 1.0})

    config.data = ml_collections.ConfigDict()
    config.data.dir = "~/.cache/arc_jax/tiny_cpu"
    config.data.generate = "tiny_corpus"
    config.data.corpus = ml_collections.ConfigDict({
        "seed": 0, "n_entities": 300, "held_out": 60, "pretrain_copies": 2, "vocab_size": vocab_size})
    config.data.seq_len = 768
    config.data.rows = 2
    config.data.shots = 5
    config.data.qa_episodes_per_epoch = 0  # 0: every qa_train record once per epoch
    # Chance a training QA record's answer is swapped (in the passage too) for another person's
    # value of the same attribute: answering from memorised facts then fails, reading works.
    config.data.counterfactual_prob = 1.0
    config.data.qa_prompt_weight = 0.1  # loss weight of QA prompt tokens (answers: 1); 1.0 = every token
    return config
