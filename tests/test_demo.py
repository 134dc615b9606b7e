"""`arc-jax demo --smoke`: every stage of the CPU demo runs (a few steps of tiny models) through the
real code paths, and leaves well-formed artefacts. The full-size demo is not part of the suite."""

import json

import pytest

from arc_jax.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--smoke", "--workdir", str(workdir), "--max-examples", "6", "--pooling-factors", "4", "8"]) == 0
    return workdir


def test_results_hold_every_mode_with_well_formed_metrics(demo):
    results = json.loads((demo / "results.json").read_text())
    assert set(results) == {"closed_book", "open_book", "arc4", "arc8"}
    for mode in ("closed_book", "open_book", "arc4", "arc8"):
        r = results[mode]
        assert 0.0 <= r["em"] <= 100.0 and r["n"] == 6
        assert r["prefill_tokens"] > 0
    assert results["closed_book"]["compression_ratio"] is None
    assert results["open_book"]["compression_ratio"] == pytest.approx(1.0)
    # Compressed documents take fewer decoder slots: about 4x and 8x fewer (plus <Cont> and rounding up).
    assert 2.5 < results["arc4"]["compression_ratio"] < 4.01
    assert 5.0 < results["arc8"]["compression_ratio"] < 8.01
    assert results["arc8"]["prefill_tokens"] < results["arc4"]["prefill_tokens"] < results["open_book"]["prefill_tokens"]
    # The reference's closed-book prompt keeps the shots' documents as text, without the question's own.
    assert results["closed_book"]["prefill_tokens"] < results["open_book"]["prefill_tokens"]


def test_questions_are_asked_zero_shot_as_the_encoder_is_fine_tuned(demo):
    # One example before each question, the same for all, was copied into most wrong ARC4 answers of
    # the full demo (arc_jax/demo/run.py, SHOTS): by default each prompt holds the question's document only.
    assert json.loads((demo / "demo.json").read_text())["shots"] == 0
    for mode, path in [("open_book", "text/predictions/qa_eval.open_book.jsonl"),
                       ("arc4", "arc4/predictions/qa_eval.compressed.jsonl")]:
        records = [json.loads(line) for line in (demo / "eval" / path).read_text().splitlines()]
        assert len(records) == 6, mode
        for r in records:
            text = "".join(piece.get("text", "") for piece in r["prompt"] if "compressed" not in piece)
            compressed = [piece for piece in r["prompt"] if "compressed" in piece]
            assert text.count("Question:") == 1, (mode, text)
            assert len(compressed) == (1 if mode == "arc4" else 0), mode


def test_artefacts_exist(demo):
    assert (demo / "results.md").read_text().count("\n") == 6  # header, rule, 4 modes
    assert (demo / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in ("decoder_lm", "arc_pretrain", "arc4", "arc8"):
        assert list((demo / stage / "tensorboard").glob("events.out.tfevents.*")), stage
    assert (demo / "decoder_lm" / "decoder").is_dir()
    settings = json.loads((demo / "demo.json").read_text())
    assert settings["smoke"] and set(settings["seconds"]) >= {"decoder", "pretrain", "evaluation"}
    for mode in ("text", "arc4", "arc8"):
        assert (demo / "eval" / mode / "results.json").exists()


def test_a_second_run_starts_over_unless_resumed(tmp_path):
    from arc_jax.demo.run import MARKER, _prepare_workdir

    workdir = tmp_path / "run"
    _prepare_workdir(workdir, resume=False)
    assert (workdir / MARKER).exists()
    (workdir / "decoder_lm").mkdir()
    (workdir / "decoder_lm" / "checkpoint").write_text("x")
    _prepare_workdir(workdir, resume=True)
    assert (workdir / "decoder_lm" / "checkpoint").exists()  # --resume keeps every stage's state
    _prepare_workdir(workdir, resume=False)
    assert not (workdir / "decoder_lm").exists() and (workdir / MARKER).exists()  # a new run reuses nothing


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    from arc_jax.demo.run import _prepare_workdir

    with pytest.raises(FileExistsError, match="not a demo"):
        _prepare_workdir(tmp_path, resume=False)
    with pytest.raises(FileExistsError, match="not a demo"):
        _prepare_workdir(tmp_path, resume=True)
    assert (tmp_path / "precious.txt").exists()


def test_seed_reaches_every_stage(demo, tmp_path):
    """--seed 1 against the default seed 0 (the module's run): another corpus, another decoder LM,
    another fresh encoder, recorded in demo.json."""
    import numpy as np

    from arc_jax.convert import read_decoder, read_encoder

    other = tmp_path / "seed1"
    assert main(["demo", "--smoke", "--workdir", str(other), "--max-examples", "6", "--seed", "1",
                 "--pooling-factors", "4"]) == 0
    assert json.loads((other / "demo.json").read_text())["seed"] == 1
    assert json.loads((demo / "demo.json").read_text())["seed"] == 0
    for name in ("pretrain.jsonl", "fresh_documents.jsonl", "fresh_qa.jsonl"):
        assert (other / "data" / name).read_text() != (demo / "data" / name).read_text(), name

    def differ(a, b):
        return not all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))

    assert differ(read_decoder(other / "decoder_lm" / "decoder")[1], read_decoder(demo / "decoder_lm" / "decoder")[1])
    fresh = read_encoder(other / "encoder_init")[1]["decoder_0"], read_encoder(demo / "encoder_init")[1]["decoder_0"]
    assert differ(*fresh)
    assert (other / "results.json").exists()


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)
