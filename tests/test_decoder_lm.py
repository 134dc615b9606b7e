"""arc_jax.demo.decoder_lm: the demo's decoder LM trained from scratch (a few steps of a tiny config)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import arc_jax
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.demo import decoder_lm as lm
from xla_flags import with_devices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "configs"))
import demo_decoder  # noqa: E402


def tiny_config(data_dir, max_steps=12):
    config = demo_decoder.get_config()
    config.max_steps = max_steps
    config.log_every = 2
    config.checkpoint_every = 6
    config.data.dir = str(data_dir)
    config.data.corpus.n_entities = 40
    config.data.corpus.held_out = 8
    config.data.corpus.pretrain_copies = 1
    config.data.corpus.vocab_size = 512  # a FieldReference: the model's vocab follows
    config.data.seq_len = 768
    config.data.rows = 2
    config.data.qa_episodes_per_epoch = 4
    config.data.fresh_people = 20
    config.probe_examples = 8
    config.model.update({"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 16,
                         "hidden_dim": 64})
    config.optimizer.lr = 1e-2
    config.optimizer.warmup_steps = 2
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    config = tiny_config(root / "data")
    return config, root / "run", lm.train_lm(config, root / "run")


def test_episode_matches_the_harness_open_book_prompt(trained):
    from arc_jax.evaluation.harness import Example, few_shot_template, realize
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    tok = load_tokenizer(data_dir / "tokenizer.model")
    records = lm._read_jsonl(data_dir / "qa_train.jsonl")[:6]
    ids, weights = lm.encode_episode(records, tok, prompt_weight=0.0)
    examples = [Example(r["question"], tuple(r["answer"]), r["passages"][0], i) for i, r in enumerate(records)]
    prompt = few_shot_template(list(enumerate(examples[:5])), (5, examples[5]), True)
    pieces = realize(prompt, "open_book", tok, {}, 5).pieces
    prompt_ids = [t for piece in pieces for t in piece]
    answer = tok.encode(" " + records[5]["answer"][0])
    assert ids[:len(prompt_ids)] == prompt_ids  # byte for byte the evaluation prompt
    assert ids[len(prompt_ids):] == answer + [tok.eos_id]
    assert weights[len(prompt_ids):] == [1.0] * (len(answer) + 1)  # the target answer carries loss
    assert 0 < sum(weights) < len(weights) / 4  # answers only


def test_question_lines_can_carry_their_own_weight(trained):
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    tok = load_tokenizer(data_dir / "tokenizer.model")
    record = lm._read_jsonl(data_dir / "qa_train.jsonl")[0]
    ids, weights = lm.encode_episode([record], tok, prompt_weight=0.0, question_weight=1.0)
    question = tok.decode([i for i, w in zip(ids[:-1], weights[:-1]) if w == 1.0])
    assert question == f"\nQuestion: {record['question']}\nAnswer: {record['answer'][0]}"
    assert tok.decode([i for i, w in zip(ids, weights) if w == 0.0]).endswith(record["passages"][0])


def test_fresh_people_are_new_and_reproducible(trained):
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    data = lm.build_data(config, data_dir, load_tokenizer(data_dir / "tokenizer.model"))
    corpus_names = {w for name in ("qa_train.jsonl", "qa_eval.jsonl") for r in lm._read_jsonl(data_dir / name)
                    for w in r["entity"].split()}
    fresh = data.fresh_qa(3)
    assert len({r["entity"] for r in fresh}) == config.data.fresh_people
    assert not {w for r in fresh for w in r["entity"].split()} & corpus_names
    assert fresh == data.fresh_qa(3) and fresh != data.fresh_qa(4)
    assert all(r["answer"][0] in r["passages"][0] for r in fresh)  # every answer is in its document


def test_the_probe_targets_exactly_the_answer_tokens(trained):
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    tok = load_tokenizer(data_dir / "tokenizer.model")
    records = lm._read_jsonl(data_dir / "qa_eval.jsonl")
    probe = lm.answer_probe(records, tok, shots=2, n=5)
    answers = {" " + r["answer"][0] for r in records}
    for tokens, target in zip(probe["tokens"], probe["target"]):
        assert tok.decode(tokens[target].tolist()) in answers
        assert tok.decode(tokens[: np.flatnonzero(target)[0]].tolist()).endswith("\nAnswer:")


def test_packed_rows_keep_segments_apart(trained):
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    data = lm.build_data(config, data_dir, load_tokenizer(data_dir / "tokenizer.model"))
    tokens, seg, pos, w = data.epoch_rows(0)
    assert tokens.shape[1] == config.data.seq_len and (tokens[seg == 0] == 0).all() and (w[seg == 0] == 0).all()
    for row_seg, row_pos in zip(seg, pos):
        for s in set(row_seg.tolist()) - {0}:
            np.testing.assert_array_equal(row_pos[row_seg == s], np.arange((row_seg == s).sum()))
    again = data.epoch_rows(0)
    assert all((a == b).all() for a, b in zip((tokens, seg, pos, w), again))  # deterministic


def test_batches_are_the_epochs_rows_in_order_across_epochs(trained):
    """The next epoch is made on a thread while this one's batches are used: the batches are still
    each epoch's rows in order, an epoch's partial last batch dropped, from any resumed state; an
    error making an epoch reaches the caller."""
    config, _, _ = trained
    data_dir = Path(config.data.dir)
    data = lm.build_data(config, data_dir, load_tokenizer(data_dir / "tokenizer.model"))
    rows = data.rows
    expected = []
    for epoch in range(3):
        arrays = data.epoch_rows(epoch)
        for index in range(len(arrays[0]) // rows):
            expected.append(([a[index * rows:(index + 1) * rows] for a in arrays], {"epoch": epoch, "index": index + 1}))
    for start in (0, len(expected) // 2):
        state = {"epoch": 0, "index": 0} if start == 0 else expected[start - 1][1]
        batches = data.batches(state)
        for arrays, after in expected[start:]:
            batch, got = next(batches)
            assert got == after
            for key, a in zip(("tokens", "segment_ids", "positions", "weights"), arrays):
                np.testing.assert_array_equal(batch[key], a)

    small = dataclasses.replace(data, rows=10**6)
    with pytest.raises(ValueError, match="fewer than a batch"):
        next(small.batches({"epoch": 0, "index": 0}))


def test_training_lowers_the_loss_and_writes_a_loadable_decoder(trained):
    config, workdir, summary = trained
    assert summary["final_loss"] < summary["first_loss"] - 0.5
    assert (workdir / "checkpoints" / str(config.max_steps)).is_dir()
    dec = arc_jax.load_decoder(workdir / "decoder")
    assert dec.config == lm.backbone_from_config(config)
    assert np.isfinite(dec.logits([[1, 5, 9]])).all()


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    config, workdir, summary = trained
    with pytest.raises(FileExistsError):
        lm.train_lm(config, workdir)
    # A run stopped at step 6 then resumed to 12 ends with the same weights as the straight run.
    first = lm.train_lm(tiny_config(config.data.dir), tmp_path / "run", stop_step=6)
    assert first["steps"] == 6
    resumed = lm.train_lm(tiny_config(config.data.dir), tmp_path / "run", resume=True)
    assert resumed["start_step"] == 6
    a = arc_jax.load_decoder(workdir / "decoder").params
    b = arc_jax.load_decoder(tmp_path / "run" / "decoder").params
    import jax
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_two_devices_splitting_the_rows_train_like_one(trained, tmp_path):
    """The demo splits the decoder LM's rows over the host's cores (arc_jax/demo/run.py): on two
    devices, stopped at step 6 and resumed, the run ends with the weights of the straight run on
    one, up to the order of the gradients' float sums."""
    config, workdir, summary = trained
    env = {**os.environ, "XLA_FLAGS": with_devices(2), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "lm_data_parallel_probe.py"),
                          str(config.data.dir), str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2 and report["first_steps"] == 6 and report["resumed_from"] == 6
    assert report["odd_rows"] == "config.data.rows=3 is not divisible by the 2 devices: choose a multiple of 2"
    assert False in report["norms_on_one_cpu_device"]  # the step, traced under its two devices' mesh
    assert report["final_loss"] == pytest.approx(summary["final_loss"], rel=1e-5)
    a = arc_jax.load_decoder(workdir / "decoder").params
    b = arc_jax.load_decoder(tmp_path / "run" / "decoder").params
    import jax
    diffs = [float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    assert max(diffs) < 1e-5, max(diffs)  # 4.8e-7 measured (jax 0.10.2)
