"""The training input pipeline: deterministic, resumable, counts bad records, packs densely."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from arc_jax.cli import main
from arc_jax.config_loading import ConfigError, load_config
from arc_jax.data.bad_records import DataError
from arc_jax.data.pipeline import Made, Skipped
from arc_jax.train.run_config import parse_run_config, run_batches
from tiny_shapes import two_a_row

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny_cpu.py"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_data")


def config(data_dir, *overrides):
    return load_config(CONFIG, [f"--config.data.dir={data_dir}", *overrides])


def pipeline(cfg, **kwargs):
    """The input pipeline of the run `cfg` describes, as the trainer builds it."""
    return run_batches(parse_run_config(cfg, device_count=1), **kwargs)


def same_batches(a, b):
    for x, y in zip(jax_leaves(a), jax_leaves(b)):
        if x.shape != y.shape or not np.array_equal(x, y):
            return False
    return True


def jax_leaves(batch):
    import jax

    return jax.tree.leaves(batch)


def test_resume_gives_the_batches_of_an_uninterrupted_run(data_dir):
    run = pipeline(config(data_dir))
    for _ in range(3):
        next(run)
    state = json.loads(json.dumps(run.get_state()))  # small and serialisable
    expected = [next(run)[0] for _ in range(3)]
    resumed = pipeline(config(data_dir))
    resumed.set_state(state)
    for want in expected:
        assert same_batches(next(resumed)[0], want)


def test_a_state_naming_a_sample_the_data_does_not_make_is_refused_in_one_line(data_dir):
    run = pipeline(config(data_dir))
    next(run)
    state = json.loads(json.dumps(run.get_state()))
    shard = next(iter(state["shards"].values()))
    assert shard["pending"], "the tiny config leaves samples waiting after a batch"
    shard["pending"][0] = [shard["pending"][0][0], 999]  # no record has 1000 windows
    with pytest.raises(DataError, match=r"pending sample \(\d+, 999\)"):
        pipeline(config(data_dir)).set_state(state)


def test_batches_are_a_function_of_config_seed_and_process(data_dir):
    a, b = pipeline(config(data_dir)), pipeline(config(data_dir))
    assert all(same_batches(next(a)[0], next(b)[0]) for _ in range(3))
    other_seed = pipeline(config(data_dir, "--config.seed=1"))
    assert not same_batches(next(pipeline(config(data_dir)))[0], next(other_seed)[0])


def test_processes_read_disjoint_records(data_dir):
    cfg = config(data_dir)
    seen = []
    for process in range(2):
        batches = pipeline(cfg, process_index=process, process_count=2)
        next(batches)
        seen.append({batches.maker.mixture.index(p)[1] for p in range(200)})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_worker_processes_give_the_same_batches(data_dir):
    inline = pipeline(config(data_dir))
    workers = pipeline(config(data_dir, "--config.data.worker_count=2"))
    assert all(same_batches(next(inline)[0], next(workers)[0]) for _ in range(3))


def test_pretraining_batches_pack_at_least_89_percent(data_dir):
    """The packer, unchanged, filled 90.5% of decoder slots on the tiny corpus of generator version 1
    and 89.9% on version 2 (shorter towns and numbers, so other sample lengths); encoder 96.9%. The bar
    guards against a packer that wastes rows (one ~81-slot sample a row would fill about 36%)."""
    batches = pipeline(config(data_dir))
    for _ in range(150):
        next(batches)
    assert batches.total.decoder_efficiency >= 0.89 and batches.total.encoder_efficiency >= 0.9
    assert batches.bad.total == 0


def _bad_source(folder: Path) -> Path:
    good = json.dumps({"text": "Ilmar Quen was born in Dovetree in 1901 and works as a baker. " * 3})
    lines = [good, "{not json", json.dumps({"txt": "missing field"}), json.dumps({"text": ""}), good,
             json.dumps({"text": 5}), good]
    path = folder / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_records_are_counted_with_file_and_line(data_dir, tmp_path):
    path = _bad_source(tmp_path)
    batches = pipeline(config(data_dir, f"--config.data.sources={path}"))
    for _ in range(3):
        next(batches)
    where = {str(r) .split(": ", 1)[0] for r in batches.bad.examples}
    assert {f"{path}:2", f"{path}:3", f"{path}:4", f"{path}:6"} <= where
    assert batches.total.samples > 0


def test_strict_mode_stops_at_the_first_bad_record(data_dir, tmp_path):
    path = _bad_source(tmp_path)
    batches = pipeline(config(data_dir, f"--config.data.sources={path}", "--config.data.strict=True"))
    with pytest.raises(DataError, match=r"mixed.jsonl:\d+: .*strict"):
        for _ in range(3):
            next(batches)


def test_data_check_command_reports(data_dir, capsys):
    assert main(["data", "check", "--config", str(CONFIG), "--batches", "5", f"--config.data.dir={data_dir}"]) == 0
    out = capsys.readouterr().out
    assert "packing efficiency" in out and "decoder tokens/s" in out and "pretrain.jsonl" in out


def test_config_overrides_are_checked(data_dir, capsys):
    with pytest.raises(ConfigError, match="no field config.data.nope"):
        config(data_dir, "--config.data.nope=1")
    with pytest.raises(ConfigError, match="expected int"):
        config(data_dir, "--config.seed=1.5")
    assert main(["data", "check", "--config", str(CONFIG), "--config.data.max_len=abc"]) == 2
    assert "expected int" in capsys.readouterr().err


def test_finetuning_pipeline_builds_few_shot_samples_with_shots_from_the_source(data_dir):
    cfg = config(data_dir, f"--config.data.sources={data_dir}/qa_train.jsonl:1:2", "--config.data.task=finetune",
                 "--config.data.max_len=128", *two_a_row(encoder_rows=12))
    batches = pipeline(cfg)
    batch, stats = next(batches)
    samples = [s for _, made in (batches.maker(p) for p in range(20)) for s in made.samples]
    assert all(s.task == "fewshot" and len(s.contexts) == 3 for s in samples)
    assert stats.samples >= 3 and batches.bad.total == 0
    # Loss on the final answer of each packed sample only: one run of masked targets per sample.
    for row in range(batch.loss_mask.shape[0]):
        for seg in set(batch.segment_ids[row][batch.segment_ids[row] > 0]):
            mask = batch.loss_mask[row][batch.segment_ids[row] == seg]
            assert mask.sum() > 0 and np.count_nonzero(np.diff(mask)) <= 2


def test_a_text_shorter_than_the_pooling_factor_is_pooled_into_one_vector(data_dir, tmp_path):
    """The reference drops a sample only when a text it compresses has at most one token
    (embed_llm/data/data_loader.py, `len(l_toks) <= 1`); a shorter text than the pooling factor is
    one group (SPEC, pool_groups), so "a", which the encoder reads as <s> a </s>, is a sample."""
    path = tmp_path / "short.jsonl"
    good = json.dumps({"text": "Ilmar Quen was born in Dovetree in 1901 and works as a baker. " * 3})
    path.write_text("\n".join([good, json.dumps({"text": "a"}), good]) + "\n")
    cfg = config(data_dir, f"--config.data.sources={path}", "--config.data.continuation_prob=0.0")
    assert parse_run_config(cfg, device_count=1).encoder.pooling_factors == (4,)
    batches = pipeline(cfg)
    made = [batches.maker(position)[1] for position in range(6)]  # each record twice, in the mixture's order
    assert not any(isinstance(m, Skipped) for m in made)
    assert sum(len(s.contexts[0]) == 3 for m in made for s in m.samples) == 2


def _long_context_record(maker, n_tokens: int) -> dict:
    """A long-context record whose document is exactly n_tokens encoder tokens."""
    words = ("Orla Venn kept bees in Marrowdale for forty years. " * (n_tokens // 4)).split()
    for end in range(len(words)):
        for tail in ("", " a", " ab", " b", " c"):
            text = " ".join(words[:end]) + tail
            if len(maker.encoder_tok.encode(text)) == n_tokens:
                return {"text": text, "instruction": "Where were the bees kept?", "answer": "Marrowdale"}
    raise AssertionError(f"no text of {n_tokens} tokens")


def test_a_long_documents_short_last_chunk_is_compressed_not_dropped(data_dir, tmp_path):
    """A document cut into chunks of 1024 tokens keeps a last chunk shorter than the pooling factor
    (one vector); only a chunk of one token drops the sample, as the reference's data loader does."""
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "-", "instruction": "-", "answer": "-"}) + "\n")
    batches = pipeline(config(data_dir, f"--config.data.sources={path}", "--config.data.task=long_context"))
    records = [_long_context_record(batches.maker, n) for n in (1024 + 3, 1024 + 1)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    batches = pipeline(config(data_dir, f"--config.data.sources={path}", "--config.data.task=long_context"))
    made = [batches.maker(position)[1] for position in range(2)]
    (sample,) = [s for m in made if isinstance(m, Made) for s in m.samples]
    assert [len(c) for c in sample.contexts] == [1024, 3]
    (skipped,) = [m for m in made if isinstance(m, Skipped)]
    assert skipped.line == 2 and "at most one token" in skipped.reason


def test_long_context_pipeline_compresses_chunks_without_special_vectors(data_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    doc = "Orla Venn kept bees in Marrowdale for forty years. " * 12
    path.write_text(json.dumps({"text": doc, "instruction": "Where were the bees kept?", "answer": ["Marrowdale"]}) + "\n")
    cfg = config(data_dir, f"--config.data.sources={path}", "--config.data.task=long_context")
    batches = pipeline(cfg)
    _, made = batches.maker(0)
    (sample,) = made.samples
    assert sample.task == "long_context" and sample.special is None and len(sample.contexts) >= 1
    batch, stats = next(batches)
    assert stats.samples >= 1 and batch.loss_mask.sum() > 0
    special_rows = batch.compressed_index >= batch.encoder.tokens.shape[0] * batch.encoder.stages[-1].segment_ids.shape[1]
    assert not special_rows.any()


def test_records_the_reference_filters_out_by_rand_are_never_read(data_dir, tmp_path):
    """embed_llm/data/dataset.py:lazy_load_and_yield skips a record with "rand" >= 0.8 (its web-crawl
    filter); arc_jax counts these apart from bad records. rand_filter = 0 reads them all."""
    path = tmp_path / "crawl.jsonl"
    kept, dropped = "Ilmar Quen was born in Dovetree in 1901. " * 3, "Orla Venn kept bees in Marrowdale. " * 3
    path.write_text("\n".join(json.dumps({"text": t, "rand": r}) for t, r in
                              [(kept, 0.1), (dropped, 0.8), (kept, "0.79"), (dropped, 0.95)]) + "\n")
    batches = pipeline(config(data_dir, f"--config.data.sources={path}"))
    batch, _ = next(batches)
    decoder_tok = batches.maker.decoder_tok
    texts = {decoder_tok.decode(batch.tokens[row][batch.compressed_index[row] < 0]) for row in range(4)}
    assert any("Ilmar" in t for t in texts) and not any("Orla" in t for t in texts)
    assert batches.total.counts["rand_filtered"] > 0 and batches.bad.total == 0
    unfiltered = pipeline(config(data_dir, f"--config.data.sources={path}", "--config.data.rand_filter=0.0"))
    next(unfiltered)
    assert not unfiltered.total.counts["rand_filtered"]


def test_pretraining_batches_hold_one_task_two_thirds_continuation(data_dir):
    """The reference keeps one row buffer per task (dataset.py:sequence_iterator), so a step is all
    continuation or all reconstruction; with p = 0.8 per document and a continuation window reading
    twice the document tokens, 2/3 of the steps are continuation (notes/reference_recipe.md 2.2)."""
    batches = pipeline(config(data_dir))
    kinds = []
    for _ in range(60):
        batch, _ = next(batches)
        present = set(batch.task_ids[batch.task_ids >= 0].tolist())
        assert len(present) == 1
        kinds += present
    assert 0.55 < kinds.count(1) / len(kinds) < 0.8  # TASKS.index("continuation") == 1
    mixed = pipeline(config(data_dir, "--config.data.single_task_batches=False"))
    assert any(len(set(next(mixed)[0].task_ids.ravel().tolist()) - {-1}) == 2 for _ in range(10))


def test_evaluation_batches_mix_tasks(data_dir):
    run = parse_run_config(config(data_dir), device_count=1)
    batches = run_batches(run, sources=f"{data_dir}/pretrain_eval.jsonl")
    assert any(len(set(next(batches)[0].task_ids.ravel().tolist()) - {-1}) == 2 for _ in range(5))


def test_resume_inside_a_document_whose_windows_span_batches(data_dir, tmp_path):
    """Every window of a document is a sample; a document longer than a batch leaves windows
    waiting, which the state names by (position, window)."""
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "Ilmar Quen was born in Dovetree in 1901 and works as a baker. " * 80}) + "\n")
    run = pipeline(config(data_dir, f"--config.data.sources={path}"))
    next(run)
    state = json.loads(json.dumps(run.get_state()))
    assert any(window > 0 for _, window in state["shards"]["0"]["pending"])
    expected = [next(run)[0] for _ in range(3)]
    resumed = pipeline(config(data_dir, f"--config.data.sources={path}"))
    resumed.set_state(state)
    for want in expected:
        assert same_batches(next(resumed)[0], want)


def test_data_check_proposes_rows_of_one_sample_with_their_share_of_the_loss_buffer(data_dir):
    """tiny_cpu's pretraining samples take <= 81 decoder slots, two to a row of 168 with a loss
    buffer of 128 in its shape before 2026-12-05. Rows of one sample (84 slots) attend block-causal
    chunks of 21 (4 a row) instead of 8 chunks of 21 over two samples, and the buffer shrinks with
    the row to 64 (the most loss tokens of a sample). The check measures that shape above 90% useful
    work on the same data (tiny_cpu's shape since)."""
    from arc_jax.data.check import data_check

    report = data_check(config(data_dir, *two_a_row()), n_batches=8)
    proposed = report["proposed_shape"]
    assert (proposed["decoder_rows"], proposed["decoder_len"], proposed["loss_slots"]) == (8, 84, 64)
    assert report["useful_fraction"] < 0.9 < report["proposed"]["useful_fraction"]
    assert report["proposed"]["samples_per_batch"] == pytest.approx(report["samples_per_batch"], rel=0.01)


def test_data_check_tries_rows_of_a_few_average_contexts_between_the_halvings():
    """Contexts of ~79 tokens (3300 in 42), the longest 104, in rows of 256: halving gives 128 (one
    context a row, 62% full) and no more; rows of two average contexts at 95% fill are
    8 * ceil(2 * 78.57 / 0.95 / 8) = 168 slots; three would need 256, today's length."""
    from types import SimpleNamespace

    from arc_jax.data.check import _encoder_lengths
    from arc_jax.data.packing import PackingShape

    work = SimpleNamespace(shape=PackingShape(encoder_rows=8, encoder_len=256, decoder_rows=4, decoder_len=256),
                           longest_context=104, encoder_tokens=[1600, 1700], contexts=42)
    assert _encoder_lengths(work) == [256, 168, 128]
    work.longest_context = 130  # a row of 128 no longer holds the longest context
    assert _encoder_lengths(work) == [256, 168]


def test_data_check_proposes_row_counts_the_devices_split(data_dir, capsys, monkeypatch):
    """With the rows split over 2 devices (data x fsdp), every encoder and decoder row count the check
    tries, and so proposes, is even; over 1 device it tries odd ones too. A config whose own rows the
    devices do not split is named."""
    from arc_jax.data import check

    overrides = ["--config.data.shape.encoder_rows=8", "--config.data.shape.encoder_len=128",
                 "--config.data.shape.loss_slots=0"]
    tried = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            tried.extend(out)
            return out
        return wrapped

    for name in ("_candidates", "_decoder_candidates"):
        monkeypatch.setattr(check, name, spy(getattr(check, name)))
    check.data_check(config(data_dir, *overrides), n_batches=4)
    assert any(s.encoder_rows % 2 for s in tried)
    tried.clear()
    two = check.data_check(config(data_dir, *overrides), n_batches=4, devices=2)["proposed_shape"]
    assert tried and all(s.encoder_rows % 2 == 0 and s.decoder_rows % 2 == 0 for s in tried)
    assert two["encoder_rows"] % 2 == 0 and two["decoder_rows"] % 2 == 0
    capsys.readouterr()
    check.data_check(config(data_dir, "--config.data.shape.encoder_rows=7", *overrides[1:]), n_batches=1, devices=2)
    assert "config.data.shape.encoder_rows=7 is not a multiple of the 2 devices" in capsys.readouterr().out
    with pytest.raises(ValueError, match="devices=0"):
        check.data_check(config(data_dir, *overrides), n_batches=1, devices=0)


def test_data_check_counts_useful_work_and_proposes_a_shape_that_fits(data_dir):
    """An encoder twice too large for what the decoder rows hold: the check's useful fraction is the
    batches' useful FLOPs over the step's executed ones, and its proposal (spans at the longest
    texts, fewer encoder slots) does more useful work per executed FLOP, measured on the same data."""
    from arc_jax.data.check import data_check
    from arc_jax.model.config import BackboneConfig
    from arc_jax.train import flops

    overrides = ["--config.data.shape.encoder_rows=8", "--config.data.shape.encoder_len=128",
                 "--config.data.shape.loss_slots=0"]
    report = data_check(config(data_dir, *overrides), n_batches=4)
    cfg = config(data_dir, *overrides)
    run = parse_run_config(cfg, device_count=1)
    dec = BackboneConfig.from_dict(cfg.model.decoders[0].backbone.to_dict())
    batches = list(itertools.islice((b for b, _ in pipeline(cfg)), 4))
    useful = sum(flops.useful_train_flops(run.encoder, dec, b)["total"] for b in batches)
    executed = 4 * flops.train_step_flops(run.encoder, dec, run.data.shape)["total"]
    assert report["useful_fraction"] == pytest.approx(useful / executed, rel=1e-9)
    longest = lambda seg: max(int(np.bincount(row, minlength=2)[1:].max()) for b in batches for row in np.asarray(seg(b)))
    proposed = report["proposed_shape"]
    assert proposed["encoder_span"] == longest(lambda b: b.encoder.segment_ids)
    # Decoder rows of one sample each, and no decoder span: a window reads no fewer keys a query than
    # the row's block-causal chunks (the span is the longest sample only where its windows do).
    from arc_jax.model.attention import keys_per_query

    sample, decoder_len = longest(lambda b: b.segment_ids), proposed["decoder_len"]
    assert decoder_len == 4 * -(-sample // 4) and proposed["decoder_span"] == 0
    assert keys_per_query(decoder_len, sample, True) >= keys_per_query(decoder_len, 0, True)
    assert proposed["encoder_rows"] * proposed["encoder_len"] < 8 * 128
    assert report["proposed"]["useful_fraction"] > report["useful_fraction"] + 0.05
    assert report["proposed"]["decoder_fill"] >= report["decoder_fill"] - 0.01
    # The output head ran on every slot; the loss buffer proposed holds the rows' loss tokens
    # (pretraining: every text token), smaller than a row, and is measured fuller.
    loss_per_row = [int(n) for b in batches for n in (np.asarray(b.loss_mask) > 0).sum(-1)]
    assert report["most_loss_tokens_per_row"] == max(loss_per_row)
    assert report["head_fill"] == pytest.approx(sum(loss_per_row) / (len(loss_per_row) * run.data.shape.decoder_len))
    sample_loss = max(int(np.bincount(seg, weights=loss).max()) for b in batches
                      for seg, loss in zip(np.asarray(b.segment_ids), np.asarray(b.loss_mask) > 0))
    assert sample_loss <= proposed["loss_slots"] < run.data.shape.decoder_len  # no kind of sample dropped
    assert report["proposed"]["head_fill"] > report["head_fill"]


def test_data_check_skips_rows_shorter_than_the_shapes_attention_rows(data_dir):
    """A shape whose decoder attention rows (from other data) are longer than this data's samples:
    rows of one sample (84 slots) would not hold its rows of 160, so the check does not try them
    (it had stopped with the shape's ValueError); everything it proposes is a shape it can build."""
    from arc_jax.data.check import data_check
    from arc_jax.data.packing import PackingShape

    overrides = two_a_row(decoder_attention_rows="[[2,160]]", attention_groups=1)
    report = data_check(config(data_dir, *overrides), n_batches=4)
    proposed = PackingShape(**report["proposed_shape"])
    assert proposed.decoder_len >= max(length for _, length in proposed.decoder_attention_rows or [(0, 0)])
