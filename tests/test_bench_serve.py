"""`arc-jax bench serve`: memory counted by hand, the largest batch in a budget, rows capped by
max_rows in generation, and a tiny end-to-end run writing the table, the JSON and the plot."""

import json

import numpy as np
import pytest

from arc_jax.cli import main
from arc_jax.inference import decoding
from arc_jax.model import BackboneConfig, presets
from arc_jax.tools.bench_inference import bench_configs, random_models
from arc_jax.tools.bench_serve import kv_bytes_per_position, largest_batch, tree_bytes


def test_kv_bytes_per_position_is_the_issues_128_kib_for_llama_3_1_8b_in_bf16():
    assert kv_bytes_per_position(BackboneConfig.from_dict(presets.LLAMA_3_1_8B), "bfloat16") == 128 * 1024
    # tiny: 2 (k, v) * 2 layers * 2 kv heads * 16 head_dim * 4 bytes
    assert kv_bytes_per_position(bench_configs("tiny", "tiny")[1], "float32") == 2 * 2 * 2 * 16 * 4


def test_largest_batch_fills_the_budget_left_by_the_weights():
    assert largest_batch(1000, 100, 300) == 3  # 100 + 3 * 300 = 1000
    assert largest_batch(999, 100, 300) == 2
    assert largest_batch(50, 100, 300) == 0  # the weights alone overflow


def test_a_chunk_never_has_more_rows_than_max_rows(monkeypatch):
    enc_cfg, dec_cfg = bench_configs("tiny", "tiny")
    _, decoder = random_models(enc_cfg, dec_cfg)
    prompts = [[[1, 5 + i, 7]] for i in range(3)]
    expected = decoding.generate_ids(decoder, prompts, 3)  # 3 prompts padded to 4 rows
    rows, prefill = [], decoding._prefill
    monkeypatch.setattr(decoding, "_prefill", lambda params, tokens, *a, **k: rows.append(len(tokens))
                        or prefill(params, tokens, *a, **k))
    assert decoding.generate_ids(decoder, prompts, 3, max_rows=3) == expected
    assert rows == [3]
    assert decoding.chunk_shape(3, 40, 8, per_octave=64) == (4, 48, 48, 8)
    assert decoding.chunk_shape(3, 40, 8, per_octave=64, max_rows=3).rows == 3


def test_cli_runs_the_three_pipelines_and_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    enc_cfg, dec_cfg = bench_configs("tiny", "tiny")
    encoder, decoder = random_models(enc_cfg, dec_cfg)
    # Context 32, question 4, 3 new tokens: the full prompt is 1 + 32 + 4 = 37 positions, its cache
    # 40 -> 48 slots (multiples of 16 below 64); the compressed one 1 + 8 vectors + <Cont> + 4 = 14,
    # its cache 17 -> 32. 512 bytes of KV per position (test above).
    full_request, compressed_request = 48 * 512, 32 * 512
    budget = tree_bytes(decoder.params) + 2 * full_request + 100  # full: 2 requests; store: 3; online: none
    out = tmp_path / "serve"
    assert main(["bench", "serve", "--encoder-preset", "tiny", "--decoder-preset", "tiny", "--context-lens", "32",
                 "--batch-sizes", "2", "--new-tokens", "3", "--prompt-len", "4", "--repeats", "1",
                 "--store-records", "2", "--memory-budget", str(budget / 2**30), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "time to first token, full / store" in printed and "largest batch" in printed
    assert {p.name for p in out.iterdir()} == {"serve_bench.json", "serve_bench.md", "serve_bench.png"}
    r = json.loads((out / "serve_bench.json").read_text())
    (largest,) = r["largest_batch"]
    assert (largest["full"], largest["online"], largest["store"]) == (2, 0, 3)
    assert largest["store_over_full"] == 1.5
    rows = {(x["pipeline"], x["batch"]): x for x in r["rows"]}
    assert set(rows) == {("full", 2), ("online", 2), ("store", 2), ("store", 3)}
    for (pipeline, batch), x in rows.items():
        per_request = full_request if pipeline == "full" else compressed_request
        assert x["kv_bytes"] == batch * per_request
        assert x["prompt_positions"] == (37 if pipeline == "full" else 14)
        assert x["memory_bytes"] == x["kv_bytes"] + tree_bytes(decoder.params) + (
            tree_bytes(encoder.params) if pipeline == "online" else 0)
        assert x["fits_budget"] == (pipeline != "online")
        assert x["largest_in_budget"] == ((pipeline, batch) in {("full", 2), ("store", 3)})
        assert not x["skipped"]
        assert 0 < x["ttft_seconds"] < 60
        assert x["decode_tokens_per_second"] == pytest.approx(batch * 2 / x["decode_seconds"])
        # XLA's own count of the decode program holds at least the weights and the cache it fills.
        assert x["decode_program_bytes"]["peak"] >= tree_bytes(decoder.params) + x["kv_bytes"]
    assert rows[("online", 2)]["decode_seconds"] == rows[("store", 2)]["decode_seconds"]  # one shared measurement
    goals = r["goals"]
    assert goals["context_len"] == 32 and goals["pooling"] == 4
    assert np.isfinite(goals["ttft_full_over_store"]["2"]) and goals["ttft_goal"] == 3.0
    assert goals["largest_batch_store_over_full"] == 1.5 and goals["decode_store_over_full"] is None
    table = (out / "serve_bench.md").read_text()
    assert "| 32 | 3 (largest: store) |" in table and "| 32 | 2 | 0 | 3 | 1.50 |" in table


def test_one_new_token_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "serve", "--new-tokens", "1", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--new-tokens: 1: expected an int >= 2" in capsys.readouterr().err
