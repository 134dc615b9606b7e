"""`arc-jax plan --generate`: the compress, prefill and decode programs of small models compiled for a
v5p-8 they do not have (libtpu, the tpu extra): arguments per device against the sharded weights,
inputs and KV cache computed here from the shapes, collectives, the JSON summary, and the CLI's
one-line errors (those without libtpu)."""

from __future__ import annotations

import json
import math

import pytest

from arc_jax.cli import main
from arc_jax.model.config import BackboneConfig, EncoderConfig
from arc_jax.tools.plan_generate import inference_mesh_shape, tensor_widths

# Widths of 128 and 16 heads per device once split 4 ways over tensor, so the compiled buffers carry no
# TPU layout padding and their sizes follow from the shapes.
DECODER = {"dim": 128, "n_layers": 2, "n_heads": 64, "n_kv_heads": 64, "head_dim": 128, "hidden_dim": 512,
           "vocab_size": 512, "rope_theta": 10000.0}
BATCH, CONTEXT, NEW = 4, 128, 8
BF16 = 2


def _configs():
    backbone = dict(DECODER, n_layers=2)
    encoder = EncoderConfig.from_dict({
        "backbone": backbone, "projectors": [{"in_dim": 128, "hidden_dim": 512, "out_dim": 128}],
        "n_truncated_layers": 0, "compress_rates": [-4], "pool_type": "mean", "causal": False,
        "n_memory_tokens": 0, "rec_tok": True, "cont_tok": True})
    return encoder, BackboneConfig.from_dict(DECODER)


@pytest.fixture(scope="module")
def planned():
    pytest.importorskip("libtpu", reason="plan compiles for TPU with libtpu (the tpu extra)")
    from arc_jax.tools.plan_generate import plan_generate

    encoder, decoder = _configs()
    return plan_generate(encoder, decoder, BATCH, CONTEXT, "v5p-8", max_new_tokens=NEW, quiet=True)


def _weights(cfg: BackboneConfig, tensor: int, tables: int, final_norm: int) -> int:
    """Bytes per device of a stack's weights: every matrix split over tensor on its heads, kv heads,
    feed-forward or vocabulary axis (`tables` [vocab, dim] tables), the norm scales replicated."""
    d, h, k, hd, f, v = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim, cfg.vocab_size
    block = 2 * d * h * hd + 2 * d * k * hd + 3 * d * f
    return (cfg.n_layers * block + tables * v * d) * BF16 // tensor + (2 * cfg.n_layers + final_norm) * d * BF16


def test_inference_layout_is_tensor_parallel_then_rows():
    from arc_jax.tools.bench_inference import bench_configs

    enc, dec = bench_configs("llama3.2-3b", "llama3.1-8b", 8)
    assert inference_mesh_shape(16, 8, tensor_widths(dec)) == (2, 1, 8)  # 8 kv heads: tensor 8, rows over 2
    assert inference_mesh_shape(16, 1, tensor_widths(dec)) == (1, 2, 8)  # one row: the rest shards weights
    assert inference_mesh_shape(16, 8, tensor_widths(enc.backbone, enc.projectors)) == (2, 1, 8)
    enc, _ = bench_configs("tiny", "tiny", 4)
    assert inference_mesh_shape(4, 4, tensor_widths(enc.backbone, enc.projectors)) == (4, 1, 1)  # 3 heads


def test_arguments_per_device_are_the_sharded_weights_inputs_and_kv_cache(planned):
    r = planned
    assert (r["topology"], r["devices"], r["fits"]) == ("v5p-8", 4, True)
    programs = r["programs"]
    assert [p["mesh_shape"] for p in programs.values()] == [[1, 1, 4]] * 3
    encoder, decoder = _configs()
    projector = (128 * 512 + 512 * 128) * BF16 // 4 + 2 * 128 * BF16  # layer1, layer2 split; <Rec>, <Cont>
    enc_weights = _weights(encoder.backbone, 4, tables=1, final_norm=0) + projector  # no output head, no norm
    dec_weights = _weights(decoder, 4, tables=2, final_norm=1)
    # Encoder rows of 128 tokens: ids, segments, positions, the pooling stage's group of each slot,
    # and per pooled slot (33 groups at most, rounded to 40) last index, segment, position.
    enc_inputs = BATCH * (4 * CONTEXT + 3 * 40) * 4
    # Prompts: 4 + (32 vectors + <Cont>) + 32 = 69 positions, prefill bucket 128, KV cache 128.
    prefill_len, table = 128, 136 * 128 * BF16  # 4 x 33 vectors padded to a multiple of 8
    prefill_inputs = BATCH * prefill_len * 4 * 2 + table + BATCH * (4 + 1)
    cache = 2 * decoder.n_layers * BATCH * prefill_len * decoder.n_kv_heads * decoder.head_dim * BF16 // 4
    expected = {"compress": enc_weights + enc_inputs, "prefill": dec_weights + prefill_inputs,
                "decode": dec_weights + cache}
    for name, want in expected.items():
        # Scalars, the sampling values and a few small vectors pad to TPU tiles: 2%.
        assert programs[name]["argument_bytes_per_device"] == pytest.approx(want, rel=0.02), name
    assert r["weight_bytes_per_device"] == {"encoder": enc_weights, "decoder": dec_weights}
    for p in programs.values():
        assert p["fits"] and p["peak_bytes_per_device"] < r["hbm_bytes_per_device"]
        assert p["flops"] > 0 and p["predicted_seconds"] > 0


def test_collectives_of_tensor_parallel_programs_and_decode_steps(planned):
    programs = planned["programs"]
    for p in programs.values():  # heads split over tensor: every block ends in a reduction
        assert p["collective_bytes_per_device"] > 0 and "all-reduce" in p["collectives"], p["program"]
    decode = programs["decode"]
    assert decode["steps"] == NEW - 1 and decode["loops"]
    step = decode["per_token"]
    # Per token at least one all-reduce per attention and feed-forward of every layer.
    assert decode["loop_collectives"]["all-reduce"]["count"] >= 2 * DECODER["n_layers"]
    assert decode["collective_bytes_per_device"] >= (NEW - 1) * step["collective_bytes_per_device"] > 0
    assert decode["predicted_seconds"] >= (NEW - 1) * step["seconds"] > 0
    assert decode["tokens_per_second"] == pytest.approx(BATCH / step["seconds"])
    assert decode["flops"] == pytest.approx((NEW - 1) * step["flops"])


def test_cli_json_summary_of_the_tiny_presets(capsys):
    pytest.importorskip("libtpu", reason="plan compiles for TPU with libtpu (the tpu extra)")
    status = main(["plan", "--generate", "--encoder-preset", "tiny", "--decoder-preset", "tiny", "--batch", "2",
                   "--context", "64", "--max-new-tokens", "4", "--topology", "v5p-8", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == 0 and out["fits"] and (out["topology"], out["devices"]) == ("v5p-8", 4)
    keys = ("peak_bytes_per_device", "argument_bytes_per_device", "temp_bytes_per_device",
            "collective_bytes_per_device", "flops", "predicted_seconds")
    assert set(out["programs"]) == {"compress", "prefill", "decode"}
    for p in out["programs"].values():
        assert all(isinstance(p[k], (int, float)) and not math.isnan(p[k]) for k in keys), p


@pytest.mark.parametrize("argv, says", [
    (["--encoder-preset", "arc9", "--decoder-preset", "tiny"], "unknown encoder preset 'arc9': choose from arc4, arc8"),
    (["--encoder-preset", "tiny", "--decoder-preset", "gpt2"], "unknown decoder preset 'gpt2': choose from llama2-7b"),
    (["--decoder-preset", "tiny"], "--generate needs --encoder-preset (one of arc4, arc8"),
    (["--encoder-preset", "tiny"], "--generate needs --decoder-preset (one of llama2-7b"),
    (["--encoder-preset", "tiny", "--decoder-preset", "tiny", "--batch", "65"], "--batch=65: must be 1..64"),
    (["--encoder-preset", "tiny", "--decoder-preset", "tiny", "--mesh", "2,2"], "expected DATA,FSDP,TENSOR"),
    (["--config", "configs/tiny_cpu.py"], "--generate plans preset models: drop --config"),
])
def test_generate_errors_are_one_line(argv, says, capsys):
    status = main(["plan", "--generate", "--topology", "v5p-8", *argv])
    err = capsys.readouterr().err
    assert status == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_plan_without_config_or_generate_is_one_line(capsys):
    assert main(["plan", "--topology", "v5p-8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "arc-jax plan: error: --config CONFIG is required (or --generate with --encoder-preset and " \
                  "--decoder-preset)"
