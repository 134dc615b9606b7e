"""Encoder checkpoints that are wrong in some way: one clear ConversionError, nothing half-written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import reference_encoder as ref
from arc_jax.convert import ConversionError, read_encoder, reference, released, write_encoder
from arc_jax.model import ProjectorConfig, RopeScaling


def _folder(tmp_path, weights_edit=None, config_edit=None, **config_kwargs):
    config = ref.make_config(**config_kwargs)
    weights = ref.random_weights(config)
    if weights_edit:
        weights_edit(weights)
    if config_edit:
        config_edit(config)
    return ref.write_released(tmp_path / "enc", config, weights)


def _error(path) -> str:
    with pytest.raises(ConversionError) as info:
        released.read(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_keys_are_listed(tmp_path):
    def drop(w):
        del w["embedder.layers.1.feed_forward.w2.weight"], w["bridge_module.layer2.weight"]
    message = _error(_folder(tmp_path, drop))
    assert "model.safetensors" in message and "missing keys" in message
    assert "embedder.layers.1.feed_forward.w2.weight" in message and "bridge_module.layer2.weight" in message


def test_unexpected_keys_are_listed(tmp_path):
    def add(w):
        w["embedder.layers.3.attention.wq.weight"] = w["embedder.layers.0.attention.wq.weight"]
        w["lm_head.weight"] = np.zeros((2, 2), np.float32)
    message = _error(_folder(tmp_path, add))
    assert "unexpected keys" in message
    assert "embedder.layers.3.attention.wq.weight" in message and "lm_head.weight" in message


def test_shape_mismatch_names_key_expected_and_found(tmp_path):
    def widen(w):
        w["embedder.layers.2.attention.wk.weight"] = np.zeros((24, 32), np.float32)
    message = _error(_folder(tmp_path, widen))
    assert "embedder.layers.2.attention.wk.weight" in message and "(16, 32)" in message and "(24, 32)" in message


def test_projector_shape_mismatch(tmp_path):
    def widen(w):
        w["bridge_module.layer1.weight"] = np.zeros((24, 33), np.float32)
    message = _error(_folder(tmp_path, widen))
    assert "bridge_module.layer1.weight" in message and "(24, 32)" in message and "(24, 33)" in message


@pytest.mark.parametrize("pool_type", ["mean_sa", "sum_pooled_queries", "mean"])
def test_unsupported_pool_type_is_named(tmp_path, pool_type):
    message = _error(_folder(tmp_path, pool_type=pool_type))
    assert "pooling_module.pool_type" in message and repr(pool_type) in message and "config.json" in message


@pytest.mark.parametrize("where", ["between", "inside_queries", "attention"])
def test_unsupported_pooling_place_is_named(tmp_path, where):
    message = _error(_folder(tmp_path, where=where))
    assert "pooling_module.where" in message and repr(where) in message


def test_several_memory_token_sets_are_refused(tmp_path):
    def second_set(w):
        w["embedder.mem_embeddings.1.weight"] = w["embedder.mem_embeddings.0.weight"]
    message = _error(_folder(tmp_path, second_set, compress_rates=[], memory_tokens=2, pool_type="mean"))
    assert "memory tokens" in message and "mem_embeddings.1.weight" in message


def test_memory_tokens_with_pooling_are_refused(tmp_path):
    message = _error(_folder(tmp_path, memory_tokens=2))
    assert "memory_tokens" in message and "compress_rates" in message


def test_unknown_bridge_type_is_named(tmp_path):
    message = _error(_folder(tmp_path, config_edit=lambda c: c["bridge_args"].update(bridge_type="cross_att")))
    assert "bridge_args.bridge_type" in message and "'cross_att'" in message


@pytest.mark.parametrize("section,name,value", [
    ("model_args", "norm_eps", "tiny"), ("model_args", "dim", None), ("embedder_args", "causal_embedder", "maybe"),
    ("embedder_args", "n_truncated_layers", 5), ("bridge_args", "in_dim", 16)])
def test_bad_config_fields_are_named(tmp_path, section, name, value):
    def edit(c):
        if value is None:
            del c[section][name]
        else:
            c[section][name] = value
    message = _error(_folder(tmp_path, config_edit=edit))
    assert (name if name == "n_truncated_layers" else f"{section}.{name}") in message and "config.json" in message


def test_truncated_weights_file(tmp_path):
    folder = _folder(tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    message = _error(folder)
    assert "truncated" in message and str(path) in message


def test_malformed_config_names_the_file(tmp_path):
    folder = _folder(tmp_path)
    (folder / "config.json").write_text('{"embedder_args": {"n_truncated_layers": 2,')
    assert released.matches(folder)  # recognised, so the malformation is what gets reported
    message = _error(folder)
    assert str(folder / "config.json") in message and "malformed JSON" in message
    with pytest.raises(ConversionError, match="malformed JSON"):
        read_encoder(folder)


def test_missing_weights_file(tmp_path):
    folder = _folder(tmp_path)
    (folder / "model.safetensors").unlink()
    assert "model.safetensors: file not found" in _error(folder)


def test_reference_checkpoint_errors_name_their_file(tmp_path):
    cfg, params = released.read(_folder(tmp_path))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    reference.write(cfg, params, ckpt)
    with pytest.raises(ConversionError, match="no params.json"):
        reference.read(tmp_path / "nowhere")
    (tmp_path / "bad_params.json").write_text('{"dim": 32, "n_layers": 5}')
    with pytest.raises(ConversionError, match="bad_params.json: n_heads: missing"):
        reference.read(ckpt, backbone_params=tmp_path / "bad_params.json")
    (ckpt / "bridge_module" / "consolidated.safetensors").unlink()
    with pytest.raises(ConversionError, match="bridge_module/consolidated.safetensors: file not found"):
        reference.read(ckpt)


def _assert_nothing_written(tmp_path, out):
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no partial folder left beside it


def test_nothing_is_written_when_params_lack_a_tensor(tmp_path):
    cfg, params = released.read(_folder(tmp_path))
    del params["pooling_layers_0"]["feed_forward"]["w2"]
    out = tmp_path / "out"
    for fmt in ("released", "reference"):
        with pytest.raises(ConversionError, match="w2"):
            write_encoder(cfg, params, out, fmt)
        _assert_nothing_written(tmp_path, out)


def test_nothing_is_written_when_params_do_not_fit_the_config(tmp_path):
    cfg, params = released.read(_folder(tmp_path))
    params["decoder_0"]["layer2"] = np.zeros((24, 41), np.float32)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"bridge_module.layer2.weight: expected \(40, 24\), found \(41, 24\)"):
        write_encoder(cfg, params, out, "released")
    _assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("change,match", [
    (lambda c: dataclasses.replace(c, projectors=(c.projectors[0], ProjectorConfig(32, 24, 48))), "different shapes"),
    (lambda c: dataclasses.replace(c, backbone=dataclasses.replace(c.backbone, rope_scaling=RopeScaling())),
     "rope_scaling"),
])
def test_configs_the_reference_cannot_express_are_refused(tmp_path, change, match):
    cfg, params = released.read(_folder(tmp_path, n_decoders=2))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=match):
        write_encoder(change(cfg), params, out, "released")
    _assert_nothing_written(tmp_path, out)
