"""`arc-jax bench inference`: the analytic FLOPs of both pipelines against XLA's own count of the
programs the library runs, their limits, and a tiny end-to-end run.

As in test_flops.py, XLA counts every op (so it sits a little above the matmul-only count) and a
while loop's body once: the decoder's scanned stack and the decode loop are counted one layer and
one step each, so the models here have one decoder layer, and one plain encoder layer before the
pooling one, and XLA's counts of the prefill and decode programs are compared with a prefill and
a single decode step.
"""

import dataclasses
import importlib.util
import json

import jax
import numpy as np
import pytest

from arc_jax.inference import decoding
from arc_jax.tools import bench_inference as inference_bench
from arc_jax.inference.shapes import bucket_length
from arc_jax.cli import main
from arc_jax.tools.bench_inference import bench_configs, inference_flops, prompt_lengths, random_models
from arc_jax.train.flops import block_matmul_flops

MIN_RATIO, MAX_RATIO = 1.0, 1.10
PROMPT = 12


@pytest.fixture(scope="module")
def models():
    enc_cfg, dec_cfg = bench_configs("tiny", "tiny", pooling=4)
    dec_cfg = dataclasses.replace(dec_cfg, n_layers=1, hidden_dim=256)
    return random_models(enc_cfg, dec_cfg)


def recorded_flops(monkeypatch, owner, name: str, run) -> float:
    """XLA's FLOPs of the jitted `owner.name` as `run()` calls it (arguments recorded, then lowered)."""
    jitted, calls = getattr(owner, name), []
    monkeypatch.setattr(owner, name, lambda *a, **k: calls.append((a, k)) or jitted(*a, **k))
    run()
    (args, kwargs), = calls
    return jitted.lower(*args, **kwargs).cost_analysis()["flops"]


@pytest.mark.parametrize("context_len", [100, 256])
def test_decoder_prefill_and_decode_step_match_xla(models, monkeypatch, context_len):
    encoder, decoder = models
    rng = np.random.default_rng(0)
    context, question = rng.integers(2, 256, context_len).tolist(), rng.integers(2, 256, PROMPT).tolist()
    block = encoder.compress([context])[0]
    counted = inference_flops(encoder.config, decoder.config, context_len, PROMPT, new_tokens=2, executed=True,
                              buckets_per_octave=8)
    for prompt, part in (([[1] + context + question], "full"), ([[1], block, question], "compressed")):
        for program, stage in (("_prefill", "prefill"), ("_decode", "decode")):
            xla = recorded_flops(monkeypatch, decoding, program,
                                 lambda prompt=prompt: decoding.generate_ids(decoder, [prompt], 2, buckets_per_octave=8))
            monkeypatch.undo()
            ratio = xla / counted[f"{part}_{stage}"]
            assert MIN_RATIO <= ratio <= MAX_RATIO, (part, stage, ratio)


def test_encoder_and_projector_match_xla(models, monkeypatch):
    encoder, decoder = models
    context = list(range(2, 202))  # 200 tokens: a padded row of 256, 50 groups in a stage of 56
    xla = recorded_flops(monkeypatch, encoder, "_compress", lambda: encoder.compress([context]))
    counted = inference_flops(encoder.config, decoder.config, len(context), PROMPT, executed=True)
    ratio = xla / (counted["encoder"] + counted["projector"])
    assert MIN_RATIO <= ratio <= MAX_RATIO, ratio


def test_useful_counts_actual_lengths_and_executed_the_padded_shapes():
    enc_cfg, dec_cfg = bench_configs("scaled", "scaled", pooling=4)
    assert prompt_lengths(enc_cfg, 1000, 32) == (1033, 1 + 250 + 1 + 32)  # BOS, context or 250 vectors + <Cont>
    useful = inference_flops(enc_cfg, dec_cfg, 1000, 32, new_tokens=100)
    for per_octave in (1, 8):
        executed = inference_flops(enc_cfg, dec_cfg, 1000, 32, new_tokens=100, executed=True,
                                   buckets_per_octave=per_octave)
        for part in ("encoder", "projector", "compressed_prefill", "compressed_decode", "full_prefill", "full_decode"):
            assert executed[part] > useful[part], (per_octave, part)
    # Power-of-two buckets pad the 1033-position prompt to 2048; eight per octave, to 1152.
    assert decoding.generation_lengths(1033, 100) == (2048, 2048)
    assert decoding.generation_lengths(1033, 100, per_octave=8) == (1152, 1152)
    assert [bucket_length(n, per_octave=8) for n in (1, 16, 17, 200, 256, 257, 1024, 1025)] == [
        16, 16, 32, 208, 256, 288, 1024, 1152]
    # One new token is the prefill alone.
    assert inference_flops(enc_cfg, dec_cfg, 1000, 32, new_tokens=1)["full_decode"] == 0


@pytest.mark.parametrize("prompt_len,new_tokens", [(1, 1), (40, 1), (40, 25), (1033, 100)])
def test_useful_attention_is_the_causal_triangle(prompt_len, new_tokens):
    """Useful FLOPs count the (query, key) pairs the masks allow. Generating N tokens after a
    prompt of L positions runs each of the L + N - 1 positions once, position i attending i keys:
    exactly a causal prefill of L + N - 1 positions, plus the N - 1 extra logits of the decode
    steps. A dense count of the prefill's attention (L^2 pairs) breaks this equality."""
    _, dec_cfg = bench_configs("scaled", "scaled", pooling=4)
    prefill = inference_bench._prefill_flops
    decode = inference_bench._decode_flops(dec_cfg, prompt_len, new_tokens, None)
    logits = 2 * dec_cfg.dim * dec_cfg.vocab_size
    total = prefill(dec_cfg, prompt_len) + decode
    assert total == pytest.approx(prefill(dec_cfg, prompt_len + new_tokens - 1) + (new_tokens - 1) * logits,
                                  rel=1e-12)
    # The executed count is what the "xla" path computes: the square for prompts of 1 and 1033 (prime)
    # slots, which cannot be cut in chunks of >= 16; 40 = 2 chunks of 20, the first scored against
    # 20 keys, the second against 40: 30 a query.
    keys = {1: 1, 40: 30, 1033: 1033}[prompt_len]
    weights, attention = block_matmul_flops(dec_cfg, 1, prompt_len, prompt_len, keys=keys)
    assert prefill(dec_cfg, prompt_len, causal=False) == dec_cfg.n_layers * (weights + attention) + logits


@pytest.mark.parametrize("pooling", [4, 8])
def test_decoder_side_ratio_tends_to_the_pooling_factor(pooling):
    """The decoder reads ~n/PF positions instead of n: its weight FLOPs fall by ~PF, its (quadratic)
    attention FLOPs by ~PF^2, so the prefill ratio lies between the two and grows with n."""
    enc_cfg, dec_cfg = bench_configs("llama3.2-3b", "llama3.1-8b", pooling=pooling)
    ratios = []
    for n in (4096, 16384, 65536):
        f = inference_flops(enc_cfg, dec_cfg, n, prompt_len=0)
        ratios.append(f["full_prefill"] / f["compressed_prefill"])
        assert 0.95 * pooling < ratios[-1] < pooling**2
    assert ratios == sorted(ratios)
    # Without attention (a 1-token "context" per block, as weights only): exactly the positions' ratio.
    f = inference_flops(enc_cfg, dataclasses.replace(dec_cfg, vocab_size=1), 4096, prompt_len=0)
    full_len, compressed_len = prompt_lengths(enc_cfg, 4096, 0)
    assert f["full_prefill"] / f["compressed_prefill"] >= full_len / compressed_len


def test_overall_speedup_is_bounded_by_the_encoder_cost():
    """Compressing costs an encoder pass over the whole context, so the end-to-end ratio stays well
    below PF (paper: ~1.8x fewer prefill FLOPs at PF 4), and decoding adds the same per-token
    work to both pipelines, which pulls the ratio towards 1."""
    enc_cfg, dec_cfg = bench_configs("llama3.2-3b", "llama3.1-8b", pooling=4)
    one = inference_flops(enc_cfg, dec_cfg, 16384, 32, new_tokens=1)
    # 1.31: at 16k the encoder's bidirectional attention weighs against the full prefill's triangle.
    assert 1.2 < one["speedup"] < 2.0
    assert one["encoder"] > one["compressed_prefill"]
    short = [inference_flops(enc_cfg, dec_cfg, 256, 32, new_tokens=n)["speedup"] for n in (1, 100, 1000)]
    assert short == sorted(short, reverse=True) and short[-1] > 1


def test_bench_inference_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "inference", "--encoder-preset", "tiny", "--decoder-preset", "tiny", "--out", str(out),
                 "--context-lens", "64", "128", "--new-tokens", "1", "4", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "measured speed-up" in printed
    r = json.loads((out / "inference_bench.json").read_text())
    assert [(row["context_len"], row["new_tokens"]) for row in r["rows"]] == [(64, 1), (64, 4), (128, 1), (128, 4)]
    for row in r["rows"]:
        assert row["full_seconds"] > 0 and row["compressed_seconds"] > row["compress_seconds"] > 0
        assert row["measured_speedup"] == pytest.approx(row["full_seconds"] / row["compressed_seconds"])
        assert row["flops"]["speedup"] == pytest.approx(row["flops"]["full"] / row["flops"]["compressed"])
    table = (out / "inference_bench.md").read_text()
    assert sum(line.startswith("|") for line in table.splitlines()) == 2 + 4 and "| 128 | 4 |" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "inference_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["backend"] == jax.default_backend()
