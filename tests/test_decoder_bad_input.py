"""Bad decoder checkpoints and bad params give one-line ConversionErrors that name the file and
the problem, and a failed write leaves nothing behind."""

import dataclasses
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from arc_jax.convert import ConversionError, meta, read_decoder, write_decoder
from arc_jax.convert.safetensors_io import SafetensorsFile, write_safetensors
from arc_jax.model.config import RopeScaling


def save_tiny_llama(path, **save_options):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64)).save_pretrained(path, **save_options)
    return path


@pytest.fixture(scope="module")
def good_hf(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("good_hf"))


@pytest.fixture(scope="module")
def good_meta(tmp_path_factory, good_hf):
    cfg, params = read_decoder(good_hf)
    path = tmp_path_factory.mktemp("meta") / "ckpt"
    write_decoder(cfg, params, path, "meta", shards=2)
    return path


@pytest.fixture
def hf_copy(good_hf, tmp_path):
    return shutil.copytree(good_hf, tmp_path / "hf")


@pytest.fixture
def meta_copy(good_meta, tmp_path):
    return shutil.copytree(good_meta, tmp_path / "meta")


def conversion_error(path_or_call, *patterns: str) -> str:
    """The message of the ConversionError raised by reading `path` (or by the call); it must be
    one line and match every pattern."""
    with pytest.raises(ConversionError) as info:
        path_or_call() if callable(path_or_call) else read_decoder(path_or_call)
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    return message


def rewrite_weights(path, change):
    """Apply `change` to the dict of tensors of path/model.safetensors."""
    f = SafetensorsFile(path / "model.safetensors")
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    del f
    change(tensors)
    write_safetensors(path / "model.safetensors", tensors, {"format": "pt"})


def test_missing_keys_are_listed(hf_copy):
    rewrite_weights(hf_copy, lambda t: [t.pop("model.norm.weight"), t.pop("model.layers.1.mlp.up_proj.weight")])
    conversion_error(hf_copy, "model.safetensors: missing keys "
                              r"\[model.layers.1.mlp.up_proj.weight, model.norm.weight\]$")


def test_unexpected_keys_are_listed(hf_copy):
    rewrite_weights(hf_copy, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": np.zeros(32, np.float32)}))
    conversion_error(hf_copy, r"model.safetensors: unexpected keys \[model.layers.0.self_attn.q_proj.bias\]$")


def test_shape_mismatch_names_key_expected_and_found(hf_copy):
    narrow = np.zeros((40, 32), np.float32)
    rewrite_weights(hf_copy, lambda t: t.update({"model.layers.1.mlp.gate_proj.weight": narrow}))
    conversion_error(hf_copy, r"model.safetensors: shape mismatch for model.layers.1.mlp.gate_proj.weight: "
                              r"expected \(48, 32\), found \(40, 32\)")


def test_meta_shape_mismatch(meta_copy):
    shard = torch.load(meta_copy / "consolidated.01.pth", weights_only=True)
    shard["layers.0.attention.wo.weight"] = torch.zeros(32, 10)  # wo is split along dim 1: 16 + 10
    torch.save(shard, meta_copy / "consolidated.01.pth")
    conversion_error(meta_copy, r"consolidated.01.pth\): shape mismatch for layers.0.attention.wo.weight: "
                                r"expected \(32, 32\), found \(32, 26\)$")


def test_meta_shards_that_do_not_fit_together(meta_copy):
    shard = torch.load(meta_copy / "consolidated.01.pth", weights_only=True)
    shard["layers.1.attention.wq.weight"] = torch.zeros(16, 30)  # wq is split along dim 0 only
    torch.save(shard, meta_copy / "consolidated.01.pth")
    conversion_error(meta_copy, r"consolidated.01.pth: layers.1.attention.wq.weight has shape \(16, 30\), which does "
                                r"not fit consolidated.00.pth's \(16, 32\) \(split along axis 0\)")


def test_meta_shard_with_a_missing_key(meta_copy):
    shard = torch.load(meta_copy / "consolidated.01.pth", weights_only=True)
    del shard["norm.weight"]
    torch.save(shard, meta_copy / "consolidated.01.pth")
    conversion_error(meta_copy, r"consolidated.01.pth \(compared with consolidated.00.pth\): "
                                r"missing keys \[norm.weight\]")


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "weights.bin").write_bytes(np.random.default_rng(0).bytes(100))
    conversion_error(tmp_path, re.escape(str(tmp_path)), "unknown decoder format", "notes.txt, weights.bin")


def test_truncated_safetensors(hf_copy):
    weights = hf_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    conversion_error(hf_copy, re.escape(str(weights)), "truncated")


def test_missing_index_shard(tmp_path):
    save_tiny_llama(tmp_path, max_shard_size="10KB")
    lost = sorted(tmp_path.glob("model-*.safetensors"))[1]
    lost.unlink()
    conversion_error(tmp_path, re.escape(str(lost)), "file not found")


def test_truncated_pth(meta_copy):
    shard = meta_copy / "consolidated.00.pth"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    conversion_error(meta_copy, re.escape(str(shard)), "cannot read this torch checkpoint")


def test_pth_without_torch(meta_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    conversion_error(meta_copy, "consolidated.00.pth: reading .pth checkpoints needs torch")


def test_writing_pth_without_torch(good_hf, tmp_path, monkeypatch):
    cfg, params = read_decoder(good_hf)
    monkeypatch.setitem(sys.modules, "torch", None)
    conversion_error(lambda: write_decoder(cfg, params, tmp_path / "out", "meta"),
                     "^writing .pth checkpoints needs torch .*container='safetensors'")
    assert not any(tmp_path.iterdir())
    write_decoder(cfg, params, tmp_path / "out", "meta", container="safetensors")
    assert read_decoder(tmp_path / "out")[0] == cfg


def test_missing_params_field(meta_copy):
    args = json.loads((meta_copy / "params.json").read_text())
    del args["n_heads"]
    (meta_copy / "params.json").write_text(json.dumps(args))
    conversion_error(meta_copy, "params.json: n_heads: missing")


def test_params_field_of_the_wrong_type(meta_copy):
    args = json.loads((meta_copy / "params.json").read_text())
    args["dim"] = "wide"
    (meta_copy / "params.json").write_text(json.dumps(args))
    conversion_error(meta_copy, r"params.json: dim = 'wide' is not an integer")


@pytest.mark.parametrize("name", ["config.json", "params.json"])
def test_malformed_json(name, hf_copy, meta_copy):
    folder = hf_copy if name == "config.json" else meta_copy
    (folder / name).write_text('{"dim": 32,, }')
    conversion_error(folder, re.escape(str(folder / name)), "malformed JSON", "line 1 column")


@pytest.mark.parametrize("change, pattern", [
    ({"model_type": "gemma"}, "model_type 'gemma' is not supported"),  # qwen2 / qwen3 are read since issue 22
    ({"attention_bias": True}, "attention_bias is true"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}},
     "rope_parameters: rope_type 'yarn' is not supported"),
])
def test_unsupported_hf_architecture(hf_copy, change, pattern):
    config = json.loads((hf_copy / "config.json").read_text())
    (hf_copy / "config.json").write_text(json.dumps({**config, **change}))
    conversion_error(hf_copy, "config.json: " + pattern)


@pytest.mark.parametrize("fmt, options", [("hf", {}), ("meta", {}), ("meta", {"container": "safetensors"})])
def test_failed_write_leaves_nothing(fmt, options, good_hf, tmp_path):
    cfg, params = read_decoder(good_hf)
    attention = params["layers"]["block"]["attention"]
    bad = {**params, "layers": {"block": {**params["layers"]["block"],
                                          "attention": {**attention, "wq": attention["wq"][:, :, :3]}}}}
    out = tmp_path / "parent" / "out"
    conversion_error(lambda: write_decoder(cfg, bad, out, fmt, **options),
                     r"params: layers/block/attention/wq has shape \(2, 32, 3, 8\); the config needs \(2, 32, 4, 8\)$")
    assert not out.exists()
    assert list((tmp_path / "parent").iterdir()) == []  # no partial temporary folder either


def test_write_with_params_missing_a_subtree(good_hf, tmp_path):
    cfg, params = read_decoder(good_hf)
    bad = {k: v for k, v in params.items() if k != "norm"}
    conversion_error(lambda: write_decoder(cfg, bad, tmp_path / "out", "hf"), r"params: missing keys \[norm/scale\]")
    assert not (tmp_path / "out").exists()


def test_write_options_are_checked(good_hf, tmp_path):
    cfg, params = read_decoder(good_hf)
    conversion_error(lambda: write_decoder(cfg, params, tmp_path / "a", "meta", shards=3),
                     r"shards = 3: tok_embeddings.weight \(64, 32\) cannot be split into 3 along axis 1")
    conversion_error(lambda: write_decoder(cfg, params, tmp_path / "b", "meta", container="zip"),
                     "unknown Meta container 'zip'")
    assert not any(tmp_path.iterdir())


def test_meta_params_json_cannot_hold_custom_rope_scaling(good_hf, tmp_path):
    cfg, params = read_decoder(good_hf)
    custom = dataclasses.replace(cfg, rope_scaling=RopeScaling(factor=32.0, original_max_position=4096))
    conversion_error(lambda: write_decoder(custom, params, tmp_path / "out", "meta"), "use_scaled_rope")
    assert not (tmp_path / "out").exists()
    # Llama 3.2's factor alone is expressible.
    llama32 = dataclasses.replace(cfg, rope_scaling=RopeScaling(factor=32.0))
    assert meta.params_json(llama32)["rope_scaling_factor"] == 32
