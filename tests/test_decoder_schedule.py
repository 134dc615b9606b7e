"""Which decoder trains at each step (config.decoder_schedule): "random" draws one per step, as
arc_jax always did; "alternate" is the reference's fair_instruct (train.py L333-364): decoder
step % 2 of the 1-based step, and decoder 1 trains on the records of decoder 0's latest batch,
re-made for its own tokenizer."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from arc_jax.config_loading import ConfigError, load_config
from arc_jax.demo.synthetic import build_tiny_data
from arc_jax.train.run_config import parse_run_config, run_batches
from arc_jax.train.trainer import Trainer, decoder_at, drawn_decoder
from tiny_shapes import two_a_row

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


def two_decoders(data_dir, schedule: str | None = None):
    """tiny_cpu with a second decoder (same shape and tokenizer) on encoder head 1."""
    config = load_config(CONFIG, [f"--config.data.dir={data_dir}"])
    second = config.model.decoders[0].to_dict()
    second["head"] = 1
    config.model.encoder.projectors = config.model.encoder.projectors * 2
    config.model.decoders = list(config.model.decoders) + [second]
    if schedule is not None:
        config.decoder_schedule = schedule
    return config


def finetune_overrides(data_dir):
    """tiny_cpu on its QA records (one sample a record, as the paper's fine-tuning)."""
    return [f"--config.data.dir={data_dir}", "--config.data.task=finetune",
            "--config.data.continuation_prob=0.0", "--config.data.sources={data_dir}/qa_train.jsonl:1:1", *two_a_row()]


def test_the_schedule_fields_are_checked(tmp_path):
    assert parse_run_config(two_decoders(tmp_path), device_count=1).decoder_schedule == "random"
    bad = {"unknown schedule": (two_decoders(tmp_path, "fair"), "decoder_schedule='fair'"),
           "alternate, one decoder": (load_config(CONFIG), "two decoders")}
    bad["alternate, one decoder"][0].decoder_schedule = "alternate"
    weights = two_decoders(tmp_path)
    weights.decoder_weights = [1.0]
    bad["weights of another length"] = (weights, "decoder_weights")
    negative = two_decoders(tmp_path)
    negative.decoder_weights = [1.0, -1.0]
    bad["negative weight"] = (negative, "decoder_weights")
    unequal = two_decoders(tmp_path, "alternate")
    unequal.decoder_weights = [0.7, 0.3]
    bad["weights with alternate"] = (unequal, "decoder_weights")
    for case, (config, message) in bad.items():
        with pytest.raises(ConfigError, match=message) as error:
            parse_run_config(config, device_count=1)
        assert "\n" not in str(error.value), case


def test_multi_decoder_fine_tuning_alternates_and_pretraining_draws():
    configs = CONFIG.parent
    assert parse_run_config(load_config(configs / "finetune_arc4_multi.py"), device_count=8).decoder_schedule == \
        "alternate"
    pretraining = parse_run_config(load_config(configs / "pretrain_arc8_multi.py"), device_count=8)
    assert (pretraining.decoder_schedule, pretraining.decoder_weights) == ("random", ())
    overridden = load_config(configs / "pretrain_arc8_multi.py", ["--config.decoder_weights=[3,1]"])
    assert parse_run_config(overridden, device_count=8).decoder_weights == (3.0, 1.0)


def test_the_random_schedule_is_unchanged_and_weights_bias_it():
    for step in range(1, 200):  # the draw arc_jax made before the field existed
        assert drawn_decoder(0, step, 2) == int(np.random.default_rng([0, step]).integers(2))
        assert decoder_at("random", 0, step, 2) == drawn_decoder(0, step, 2)
        assert decoder_at("random", 0, step, 2, (1.0, 1.0)) == drawn_decoder(0, step, 2)  # equal weights: same
    assert {decoder_at("random", 0, s, 2, (0.0, 3.0)) for s in range(1, 100)} == {1}
    biased = np.mean([decoder_at("random", 0, s, 2, (0.8, 0.2)) for s in range(1, 4001)])
    assert 0.17 < biased < 0.23
    assert [decoder_at("alternate", 0, s, 2) for s in range(1, 7)] == [1, 0, 1, 0, 1, 0]


def test_replay_remakes_the_same_records_for_another_tokenizer(tmp_path):
    """Decoder 1's pipeline re-makes decoder 0's last batch from the same (position, window) keys with
    its own tokenizer; the pipelines' states do not move, and a state without the new key restores."""
    data_dir, other = tmp_path / "data", tmp_path / "other"
    build_tiny_data(other, vocab_size=700)  # a second tokenizer, trained to another vocabulary
    config = load_config(CONFIG, finetune_overrides(data_dir))
    run = parse_run_config(config, device_count=1)
    first = run_batches(run, 0, remember=1)
    config.model.decoders[0].tokenizer = str(other / "tokenizer.model")
    second = run_batches(parse_run_config(config, device_count=1), 0)
    assert "recent" not in second.get_state()  # a pipeline that remembers nothing saves what it saved before

    next(first)
    batch, stats = next(first)
    keys = first.recent()[-1]
    state = json.loads(json.dumps(first.get_state()))
    assert [[list(k) for k in keys[0]]] == state["shards"]["0"]["recent"]
    before = second.get_state()
    replayed, replay_stats = second.replay(keys)
    assert second.get_state() == before
    samples = [second.maker(p)[1].samples[w] for p, w in keys[0]]
    assert replay_stats.samples == len(keys[0]) == stats.samples > 0
    text_slots = (replayed.compressed_index < 0) & (replayed.segment_ids > 0)
    assert sum(len(s.x) for s in samples) == int(text_slots.sum())
    assert not np.array_equal(replayed.tokens, batch.tokens)  # tokenised for the other decoder
    assert np.array_equal(replayed.encoder.tokens, batch.encoder.tokens)  # the same documents

    # A state saved before `recent` existed restores, with nothing to replay.
    old = json.loads(json.dumps(state))
    del old["shards"]["0"]["recent"]
    restored = run_batches(run, 0, remember=1)
    restored.set_state(old)
    assert restored.recent() == []
    restored.set_state(state)
    assert restored.recent() == first.recent()


def test_replayed_samples_that_do_not_fit_are_dropped_and_counted(tmp_path):
    run = parse_run_config(load_config(CONFIG, finetune_overrides(tmp_path)), device_count=1)
    feed = run_batches(run, 0, remember=1)
    next(feed)
    keys = feed.recent()[-1]
    doubled = {j: ks + ks + [(ks[0][0], 99)] for j, ks in keys.items()}  # twice the batch, and a window never made
    _, stats = feed.replay(doubled)
    assert stats.samples >= len(keys[0]) and stats.counts["replay_did_not_fit"] > 0
    assert stats.samples + stats.counts["replay_did_not_fit"] == 2 * len(keys[0])
    assert stats.counts["replay_not_made"] == 1
    assert "carried_over" not in stats.counts


def record_steps(trainer: Trainer) -> list:
    """Wrap the trainer's jitted steps to record (step, decoder, host batch) of every step."""
    seen = []

    def recording(d, step_fn):
        def step(state, params, batch):
            seen.append((trainer.step, d, jax.device_get(batch)))
            return step_fn(state, params, batch)
        return step

    trainer.steps = [recording(d, fn) for d, fn in enumerate(trainer.steps)]
    return seen


def same_tree(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def alternate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("alternate")
    config = two_decoders(root / "data", "alternate")
    config.max_steps, config.checkpoint_every, config.optimizer.warmup_steps = 6, 2, 1
    config.eval.every = 6
    trainer = Trainer(config, root / "run")
    initial = jax.device_get(trainer.state.params)
    seen = record_steps(trainer)
    summary = trainer.fit(log_every=6)
    return config, root, seen, jax.device_get(trainer.state), initial, summary


def test_both_heads_train_each_random_decoder_is_kept_and_both_are_evaluated(alternate_run):
    _, root, _, final, initial, summary = alternate_run
    for head in ("decoder_0", "decoder_1"):
        assert not same_tree(final.params[head], initial[head]), head
    assert (root / "run" / "decoder_1" / "arc_jax.json").is_file()
    assert {"eval/decoder_0/loss", "eval/decoder_1/loss"} <= set(summary) and summary["final_step"] == 6


def test_alternate_trains_decoder_1_first_and_reuses_each_batch(alternate_run):
    _, _, seen, _, _, _ = alternate_run
    assert [(step, d) for step, d, _ in seen] == [(1, 1), (2, 0), (3, 1), (4, 0), (5, 1), (6, 0)]
    batches = [b for _, _, b in seen]
    # Both decoders share the tokenizer here, so decoder 1's re-made batch is decoder 0's, bit for bit.
    assert same_tree(batches[2], batches[1]) and same_tree(batches[4], batches[3])
    assert not same_tree(batches[0], batches[1]) and not same_tree(batches[1], batches[3])


def test_alternate_resumes_mid_pair_exactly(alternate_run):
    """Saved after decoder 0's step 2 (its batch's keys in the pipeline state), restarted: steps 3-6
    are the uninterrupted run's, and so is the final state."""
    config, root, seen, final, _, _ = alternate_run
    workdir = root / "resumed"
    shutil.copytree(root / "run", workdir)
    for step in (4, 6):
        shutil.rmtree(workdir / "checkpoints" / str(step))
    trainer = Trainer(config, workdir)
    assert trainer.step == 2
    resumed = record_steps(trainer)
    trainer.fit(log_every=6)
    assert [(step, d) for step, d, _ in resumed] == [(step, d) for step, d, _ in seen[2:]]
    for (_, _, a), (_, _, b) in zip(resumed, seen[2:], strict=True):
        assert same_tree(a, b)
    assert same_tree(jax.device_get(trainer.state), final)
