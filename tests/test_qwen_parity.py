"""Qwen2/2.5 and Qwen3 decoders read from transformers checkpoints give transformers' logits
(float32, CPU), and their Hugging Face folders survive read -> write bit for bit.

Tiny random Qwen2ForCausalLM (q/k/v biases, tied embeddings) and Qwen3ForCausalLM (per-head q/k
RMSNorm, head_dim 32 with dim 64 and 4 heads, tied and untied) models are saved with
save_pretrained (sharded, with an index) and read by `arc_jax.load_decoder`; biases and norm
scales are randomised so that a misplaced one shows.
"""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

import arc_jax
from arc_jax.convert import ConversionError, detect_format, read_decoder, write_decoder
from arc_jax.model.config import BackboneConfig
from test_decoder_parity import (DIM, SHAPE, TOLERANCE, flax_logits, hf_logits, max_diff, random_tokens,
                                 spliced_logit_diff)
from test_decoder_roundtrip import assert_same_params, assert_same_tensors, hf_tensors

QWEN = dict(rope_theta=1e6, rms_norm_eps=1e-6, use_sliding_window=False)
MODELS = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(QWEN, tie_word_embeddings=True)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(QWEN, head_dim=32, tie_word_embeddings=True)),
    "qwen3_untied": (Qwen3Config, Qwen3ForCausalLM, dict(QWEN, head_dim=32, tie_word_embeddings=False)),
}


def build_qwen(name: str, seed: int):
    config_cls, model_cls, extra = MODELS[name]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**SHAPE, **extra})).float().eval()
    with torch.no_grad():  # norm scales start at ones and biases at zeros: neither would show
        for param_name, p in model.named_parameters():
            if "norm" in param_name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif param_name.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=list(MODELS))
def qwen_checkpoint(request, tmp_path_factory):
    model = build_qwen(request.param, seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path, max_shard_size="40KB")
    decoder = arc_jax.load_decoder(path)
    return request.param, model, path, decoder.config, decoder.params


def test_variants_come_from_the_config(qwen_checkpoint):
    name, model, path, cfg, params = qwen_checkpoint
    assert (path / "model.safetensors.index.json").is_file() and detect_format(path, "decoder") == "hf"
    assert cfg.qkv_bias == (name == "qwen2") and cfg.qk_norm == name.startswith("qwen3")
    assert cfg.tie_embeddings == (name != "qwen3_untied") == ("output" not in params)
    assert cfg.head_dim == (32 if name.startswith("qwen3") else DIM // 4)


def test_qwen_checkpoint_gives_transformers_logits(qwen_checkpoint):
    name, model, _, cfg, params = qwen_checkpoint
    tokens = random_tokens(1, (2, 24))
    reference = hf_logits(model, tokens)
    diff = max_diff(flax_logits(cfg, params, tokens), reference)
    print(f"{name}: max |logit diff| {diff:.2e}")
    assert diff <= TOLERANCE

    # The RoPE permutation of the biases and norm scales matters: leave them in transformers' order.
    halves_as_pairs = np.r_[0:cfg.head_dim // 2, cfg.head_dim // 2:cfg.head_dim].reshape(2, -1).T.reshape(-1)
    attention = params["layers"]["block"]["attention"]
    undone = {key: (np.asarray(w)[..., np.argsort(halves_as_pairs)] if key in ("bq", "bk", "q_norm", "k_norm") else w)
              for key, w in attention.items() if key not in ("q_norm", "k_norm")}
    for key in ("q_norm", "k_norm"):
        if key in attention:
            undone[key] = {"scale": np.asarray(attention[key]["scale"])[..., np.argsort(halves_as_pairs)]}
    wrong = {**params, "layers": {"block": {**params["layers"]["block"], "attention": undone}}}
    assert max_diff(flax_logits(cfg, wrong, tokens), reference) > 100 * TOLERANCE


def test_spliced_block_matches_transformers_inputs_embeds(qwen_checkpoint):
    name, model, _, cfg, params = qwen_checkpoint
    assert spliced_logit_diff(name, model, cfg, params) <= TOLERANCE


def test_hf_round_trip_is_bit_exact_and_loads_in_transformers(qwen_checkpoint, tmp_path):
    name, model, source, cfg, params = qwen_checkpoint
    write_decoder(cfg, params, tmp_path / "out", "hf", max_shard_bytes=40_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert_same_tensors(hf_tensors(tmp_path / "out"), hf_tensors(source))
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["model_type"] == name.split("_")[0]
    cfg2, params2 = read_decoder(tmp_path / "out")
    assert cfg2 == cfg
    assert_same_params(params2, params)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(loaded) is type(model)
    tokens = random_tokens(11, (2, 16))
    np.testing.assert_array_equal(hf_logits(loaded, tokens), hf_logits(model, tokens))


def test_meta_layout_round_trip_keeps_the_variants(qwen_checkpoint, tmp_path):
    name, model, _, cfg, params = qwen_checkpoint
    write_decoder(cfg, params, tmp_path / "meta", "meta", container="safetensors")
    cfg2, params2 = read_decoder(tmp_path / "meta")
    assert cfg2 == cfg
    assert_same_params(params2, params)


def test_options_no_transformers_architecture_has_are_refused(tmp_path):
    both = BackboneConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=96, vocab_size=128,
                          qkv_bias=True, qk_norm=True)
    with pytest.raises(ConversionError, match="qk_norm and qkv_bias: write this decoder as arc_jax"):
        write_decoder(both, {}, tmp_path / "out", "hf")
    assert not (tmp_path / "out").exists()


def test_sliding_window_configs_are_refused(tmp_path):
    build_qwen("qwen2", 0).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"use_sliding_window": True}))
    with pytest.raises(ConversionError, match="config.json: use_sliding_window"):
        read_decoder(tmp_path)
