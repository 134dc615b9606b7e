"""1B-class encoders: presets (Llama 3.2 1B, Qwen3 0.6B / 1.7B in Llama 3.2 3B's place), fresh
encoders made by `arc-jax convert --fresh-encoder` from transformers Llama (tied, as 3.2 1B) and
Qwen3 checkpoints, `arc-jax bench inference --encoder-preset` with each new preset (scaled for a
CPU), and what a smaller encoder saves at the real shapes."""

import json

import jax
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

import arc_jax
from arc_jax.cli import main
from arc_jax.convert import ConversionError, write_encoder
from arc_jax.model import presets
from arc_jax.model.config import BackboneConfig, EncoderConfig
from arc_jax.tools.bench_inference import SCALED_1B_ENCODERS, SCALED_DECODER, bench_configs, inference_flops
from arc_jax.train.flops import block_matmul_flops

NEW_PRESETS = ("llama3.2-1b", "qwen3-0.6b", "qwen3-1.7b")


def weight_flops_per_token(backbone: BackboneConfig) -> float:
    return backbone.n_layers * block_matmul_flops(backbone, 1, 1, 1)[0]


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_encoder_presets_truncate_the_backbone_and_keep_its_variants(name):
    source = BackboneConfig.from_dict(presets.ENCODER_BACKBONES[name])
    cfg = EncoderConfig.from_dict(presets.arc_encoder(8, 2, [4096, 4096], backbone=presets.ENCODER_BACKBONES[name]))
    assert cfg.backbone.n_layers == source.n_layers - 2 and cfg.n_truncated_layers == 2
    assert (cfg.backbone.qk_norm, cfg.backbone.head_dim) == (source.qk_norm, source.head_dim)
    assert source.tie_embeddings and not cfg.backbone.tie_embeddings  # an encoder has no head to tie
    assert [(p.in_dim, p.hidden_dim, p.out_dim) for p in cfg.projectors] == [(source.dim, 2048, 4096)] * 2


def test_the_default_encoder_preset_is_unchanged():
    assert presets.arc_encoder(8) == presets.arc_encoder(8, backbone=presets.LLAMA_3_2_3B)
    assert presets.arc_encoder(8)["backbone"] == dict(presets.LLAMA_3_2_3B, n_layers=26)


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_scaled_presets_keep_the_real_cost_ratio_and_variants(name):
    real_enc, real_dec = bench_configs(name, "llama3.1-8b")
    scaled_enc, scaled_dec = bench_configs(f"scaled-{name}", "scaled")
    real = weight_flops_per_token(real_enc.backbone) / weight_flops_per_token(real_dec)
    scaled = weight_flops_per_token(scaled_enc.backbone) / weight_flops_per_token(scaled_dec)
    assert scaled == pytest.approx(real, rel=0.05)
    assert scaled_enc.backbone.qk_norm == real_enc.backbone.qk_norm
    assert (scaled_enc.backbone.head_dim * scaled_enc.backbone.n_heads == scaled_enc.backbone.dim) == (
        real_enc.backbone.head_dim * real_enc.backbone.n_heads == real_enc.backbone.dim)


def test_smaller_encoders_make_cheaper_pipelines_at_the_real_shapes():
    """Llama 3.1 8B decoder, 4096-token context, 100 new tokens: the 3B encoder is most of the
    compressed pipeline's FLOPs; each 1B-class one leaves more of the full pipeline's saving."""
    flops = {}
    for name in ("llama3.2-3b",) + NEW_PRESETS:
        enc, dec = bench_configs(name, "llama3.1-8b", pooling=8)
        flops[name] = inference_flops(enc, dec, 4096, 32, new_tokens=100)
        print(f"{name}: {flops[name]['speedup']:.2f}x fewer FLOPs than the full context, encoder "
              f"{flops[name]['encoder'] / flops[name]['compressed']:.0%} of the compressed pipeline")
    assert flops["llama3.2-3b"]["encoder"] / flops["llama3.2-3b"]["compressed"] > 0.7
    for name in NEW_PRESETS:
        assert flops[name]["full"] == flops["llama3.2-3b"]["full"]
        assert flops[name]["compressed"] < 0.8 * flops["llama3.2-3b"]["compressed"]
        assert flops[name]["speedup"] > 1.4 * flops["llama3.2-3b"]["speedup"]


@pytest.mark.parametrize("name", [f"scaled-{n}" for n in NEW_PRESETS])
def test_bench_inference_runs_with_each_new_encoder_preset(name, tmp_path, capsys):
    assert name in SCALED_1B_ENCODERS and SCALED_1B_ENCODERS[name]["dim"] == SCALED_DECODER["dim"]
    out = tmp_path / "bench"
    assert main(["bench", "inference", "--encoder-preset", name, "--decoder-preset", "scaled", "--out", str(out),
                 "--context-lens", "64", "--new-tokens", "2", "--repeats", "1"]) == 0
    assert "measured speed-up" in capsys.readouterr().out
    result = json.loads((out / "inference_bench.json").read_text())
    assert result["encoder_preset"] == name
    row, = result["rows"]
    assert row["compressed_seconds"] > row["compress_seconds"] > 0 and row["flops"]["encoder"] > 0


BACKBONES = {
    "llama3.2-1b_like": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True, rope_theta=500000.0)),
    "qwen3_like": (Qwen3Config, Qwen3ForCausalLM, dict(tie_word_embeddings=True, head_dim=32, rope_theta=1e6,
                                                       rms_norm_eps=1e-6, use_sliding_window=False)),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_fresh_encoder_from_a_1b_class_backbone(name, tmp_path, capsys):
    config_cls, model_cls, extra = BACKBONES[name]
    torch.manual_seed(0)
    model = model_cls(config_cls(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=128, bos_token_id=None, eos_token_id=None,
                                 pad_token_id=None, **extra))
    model.save_pretrained(tmp_path / "backbone")
    decoder = arc_jax.load_decoder(tmp_path / "backbone")
    assert decoder.config.tie_embeddings
    assert main(["convert", "--fresh-encoder", str(tmp_path / "backbone"), str(tmp_path / "enc"),
                 "--compress-rates", "-4", "--decoder-dims", "4096", "--projector-hidden", "16"]) == 0
    assert "fresh encoder (2 layers, pooling [-4], 1 decoder head(s))" in capsys.readouterr().out
    enc = arc_jax.load_encoder(tmp_path / "enc")
    b = enc.config.backbone
    assert (b.n_layers, b.qk_norm, b.tie_embeddings, b.head_dim) == (2, name == "qwen3_like", False,
                                                                     32 if name == "qwen3_like" else 16)
    source = decoder.params["layers"]["block"]["attention"]
    for key in source:  # the pooling layer is the backbone's second layer, q/k norms included
        pooling = enc.params["pooling_layers_0"]["attention"][key]
        for got, expected in zip(jax.tree.leaves(pooling), jax.tree.leaves(source[key]), strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected)[1])
    assert [c.shape for c in enc.compress([list(range(9))])] == [(3 + 1, 4096)]  # 3 groups of 9 tokens, <Cont>
    if name == "qwen3_like":  # the reference layouts have no q/k norms
        with pytest.raises(ConversionError, match="qk_norm is set: the reference encoder is a Llama model"):
            write_encoder(enc.config, enc.params, tmp_path / "released", "released")
