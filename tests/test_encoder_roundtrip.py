"""Encoder weight formats: released and reference layouts round-trip bit-exactly through arc_jax
params, and fresh_encoder builds a pretraining start from a decoder."""

from __future__ import annotations

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch

import reference_encoder as ref
from arc_jax.convert import ConversionError, detect_format, reference, released
from arc_jax.convert.fresh import fresh_encoder, fresh_encoder_from_decoder
from arc_jax.model import ARCEncoder, BackboneConfig, Decoder, RopeScaling, pack_encoder_inputs

MODEL_ARGS = ("dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "norm_eps", "vocab_size",
              "rope_theta", "max_batch_size")


def _semantics(config: dict) -> dict:
    """What config.json means: numbers compared as numbers ("1e-05" == 1e-05), ignored keys dropped."""
    model = {k: float(config["model_args"][k]) for k in MODEL_ARGS}
    bridge = dict(config["bridge_args"])
    n_decoders = config.get("empty_init", 1) if bridge["bridge_type"] == "multi_module" else 1
    return {"model_args": model, "bridge_args": bridge, "embedder_args": config["embedder_args"],
            "n_decoders": n_decoders}


def _tensors(path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def _assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].contiguous().view(torch.uint8), b[k].contiguous().view(torch.uint8)), k


def _assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x.view(np.uint8), y.view(np.uint8))


def _model_tree(cfg):
    """Shapes and structure of the Flax encoder's own parameters."""
    inputs, _ = pack_encoder_inputs([[[1, 2, 3]]], cfg)
    shapes = jax.eval_shape(lambda: nn.unbox(ARCEncoder(cfg).init(jax.random.key(0), inputs)["params"]))
    return jax.tree.map(lambda s: s.shape, shapes)


RELEASED = {
    "single_mlp_float32": (dict(n_decoders=1), False),
    "two_decoders_bfloat16": (dict(n_decoders=2), True),
    "memory_tokens": (dict(compress_rates=[], memory_tokens=3, pool_type="mean", rec_tok=False), False),
    "pool_2_2_causal_last": (dict(compress_rates=[-2, -2], causal=True, pool_type="last_pooled_queries"), False),
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_round_trip_is_bit_exact(name, tmp_path):
    kwargs, bf16 = RELEASED[name]
    config = ref.make_config(**kwargs)
    config["model_args"]["max_batch_size"] = 1  # the value arc_jax writes; it does not record it
    src = ref.write_released(tmp_path / "src", config, ref.random_weights(config, seed=1), bfloat16=bf16)
    assert released.matches(src) and not reference.matches(src)
    assert detect_format(src, "encoder") == "released"

    cfg, params = released.read(src)
    assert cfg.backbone.n_layers == 3 and cfg.n_truncated_layers == 2 and cfg.backbone.norm_eps == 1e-5
    assert cfg.n_decoders == kwargs.get("n_decoders", 1)
    assert jax.tree.map(np.shape, params) == _model_tree(cfg)  # the tree the Flax model expects
    out = tmp_path / "out"
    out.mkdir()
    released.write(cfg, params, out)

    _assert_same_tensors(_tensors(src / "model.safetensors"), _tensors(out / "model.safetensors"))
    written = json.loads((out / "config.json").read_text())
    assert _semantics(written) == _semantics(config)
    assert written["llms"] == [] and written["embedder"] is None
    assert written["bridge_args"]["bridge_type"] == ("mlp" if cfg.n_decoders == 1 else "multi_module")
    cfg2, params2 = released.read(out)
    assert cfg2 == cfg
    _assert_same_params(params, params2)


def test_multi_module_without_empty_init_counts_decoders_from_the_keys(tmp_path):
    config = ref.make_config(n_decoders=3)
    weights = ref.random_weights(config)
    del config["empty_init"]
    cfg, _ = released.read(ref.write_released(tmp_path, config, weights))
    assert cfg.n_decoders == 3


def _reference_checkpoint(tmp_path, name="run", steps=(100, 2000)):
    """A run folder with several reference checkpoints written from the same released encoder."""
    config = ref.make_config(n_decoders=2)
    src = ref.write_released(tmp_path / "src", config, ref.random_weights(config, seed=3))
    cfg, params = released.read(src)
    run = tmp_path / name
    for step in steps:
        folder = run / "checkpoints" / f"checkpoint_{step:06d}"
        folder.mkdir(parents=True)
        reference.write(cfg, params, folder)
    return src, cfg, params, run


def test_reference_round_trip_is_bit_exact(tmp_path):
    src, cfg, params, run = _reference_checkpoint(tmp_path, steps=(2000,))
    folder = run / "checkpoints" / "checkpoint_002000"
    meta = json.loads((folder / "params.json").read_text())
    assert set(meta) == {"param_dtype", "embedder_params", "bridge_module", "model_args"}
    assert meta["param_dtype"] == "float32" and meta["model_args"]["n_layers"] == 5
    keys = set(_tensors(folder / "embedder" / "consolidated.safetensors"))
    assert "tok_embeddings.weight" in keys and "rec_tok.1.weight" in keys and "layers.2.ffn_norm.weight" in keys
    assert set(_tensors(folder / "bridge_module" / "consolidated.safetensors")) == {
        f"{d}.layer{i}.weight" for d in (0, 1) for i in (1, 2)}

    for path in (folder, run):  # the checkpoint itself or its run folder
        assert detect_format(path, "encoder") == "reference"
        cfg2, params2 = reference.read(path)
        assert cfg2 == cfg
        _assert_same_params(params, params2)
    out = tmp_path / "back"
    out.mkdir()
    released.write(cfg2, params2, out)
    _assert_same_tensors(_tensors(src / "model.safetensors"), _tensors(out / "model.safetensors"))


def test_run_folder_resolves_to_the_highest_checkpoint(tmp_path):
    _, _, _, run = _reference_checkpoint(tmp_path, steps=(900, 10000, 2000))
    assert reference.resolve(run).name == "checkpoint_010000"
    # A checkpoint still being written (no params.json yet) is passed over.
    (run / "checkpoints" / "checkpoint_020000" / "embedder").mkdir(parents=True)
    assert reference.resolve(run).name == "checkpoint_010000"


def test_reference_checkpoint_without_model_args_takes_the_backbone_params_json(tmp_path):
    _, cfg, params, run = _reference_checkpoint(tmp_path, steps=(5,))
    folder = run / "checkpoints" / "checkpoint_000005"
    meta = json.loads((folder / "params.json").read_text())
    del meta["model_args"]  # as the reference writes it
    (folder / "params.json").write_text(json.dumps(meta))
    with pytest.raises(ConversionError, match="model_args.*backbone_params"):
        reference.read(folder)
    # A Meta Llama params.json: no head_dim or hidden_dim, vocab_size -1 (read off the table).
    meta_params = {"dim": 32, "n_layers": 5, "n_heads": 4, "n_kv_heads": 2, "vocab_size": -1, "multiple_of": 16,
                   "ffn_dim_multiplier": 0.5, "norm_eps": 1e-05, "rope_theta": 10000.0, "use_scaled_rope": True}
    (tmp_path / "params.json").write_text(json.dumps(meta_params))
    cfg2, params2 = reference.read(folder, backbone_params=tmp_path / "params.json")
    assert cfg2 == cfg
    _assert_same_params(params, params2)


# ---- fresh encoders ----------------------------------------------------------------------------

DECODER = BackboneConfig(dim=32, n_layers=6, n_heads=4, n_kv_heads=2, head_dim=8, hidden_dim=48, vocab_size=64,
                         rope_theta=500000.0, rope_scaling=RopeScaling())


@functools.cache
def _decoder_params(cfg=DECODER):
    tokens = jnp.zeros((1, 8), jnp.int32)
    variables = Decoder(cfg).init(jax.random.key(0), tokens, jnp.ones_like(tokens), jnp.arange(8)[None])
    return jax.tree.map(np.asarray, nn.unbox(variables["params"]))


def test_fresh_encoder_keeps_the_first_layers_and_drops_the_rest():
    decoder = _decoder_params()
    cfg, params = fresh_encoder_from_decoder(DECODER, decoder, n_truncated_layers=2, compress_rates=(-2, -2),
                                             out_dims=(40, 56), hidden_dim=24, seed=0)
    assert cfg.backbone == dataclasses.replace(DECODER, n_layers=4, rope_scaling=None)
    assert cfg.n_truncated_layers == 2 and [p.out_dim for p in cfg.projectors] == [40, 56]
    assert jax.tree.map(np.shape, params) == _model_tree(cfg)
    assert "norm" not in params and "output" not in params
    np.testing.assert_array_equal(params["tok_embeddings"]["embedding"], decoder["tok_embeddings"]["embedding"])
    stacked = decoder["layers"]["block"]
    for kept, source in zip(jax.tree.leaves(params["layers"]["block"]), jax.tree.leaves(stacked)):
        assert kept.shape[0] == 2 and np.array_equal(kept, source[:2])
    for j in range(2):
        for kept, source in zip(jax.tree.leaves(params[f"pooling_layers_{j}"]), jax.tree.leaves(stacked)):
            assert np.array_equal(kept, source[2 + j])


def test_fresh_heads_start_like_the_reference():
    cfg, params = fresh_encoder_from_decoder(DECODER, _decoder_params(), out_dims=(40, 56), hidden_dim=512, seed=1)
    for d in range(2):
        head = params[f"decoder_{d}"]
        np.testing.assert_array_equal(head["rec_tok"], np.ones(32, np.float32))
        np.testing.assert_array_equal(head["cont_tok"], np.ones(32, np.float32))
        for name, fan_in in (("layer1", 32), ("layer2", 512)):
            w, bound = head[name], 1 / np.sqrt(fan_in)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound  # U(-bound, bound)
            assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound and abs(w.mean()) < 0.05 * bound
    _, again = fresh_encoder_from_decoder(DECODER, _decoder_params(), out_dims=(40, 56), hidden_dim=512, seed=1)
    _, other = fresh_encoder_from_decoder(DECODER, _decoder_params(), out_dims=(40, 56), hidden_dim=512, seed=2)
    assert np.array_equal(again["decoder_1"]["layer2"], params["decoder_1"]["layer2"])
    assert not np.array_equal(other["decoder_1"]["layer2"], params["decoder_1"]["layer2"])


def test_fresh_encoder_is_writable_and_runs(tmp_path):
    cfg, params = fresh_encoder_from_decoder(DECODER, _decoder_params(), out_dims=(40,), hidden_dim=24)
    released.write(cfg, params, tmp_path)
    cfg2, params2 = released.read(tmp_path)
    assert cfg2 == cfg
    _assert_same_params(params, params2)
    inputs, _ = pack_encoder_inputs([[list(range(20))]], cfg)
    h, _ = ARCEncoder(cfg).apply({"params": params}, inputs, method=ARCEncoder.encode)
    assert np.isfinite(np.asarray(h)).all()


def test_fresh_encoder_refuses_truncating_everything():
    with pytest.raises(ConversionError, match="n_truncated_layers"):
        fresh_encoder_from_decoder(DECODER, _decoder_params(), n_truncated_layers=6)


def test_fresh_encoder_from_a_decoder_checkpoint(tmp_path):
    pytest.importorskip("arc_jax.convert.meta", reason="the Meta decoder format is not available yet")
    from arc_jax.convert import write_decoder

    cfg = dataclasses.replace(DECODER, rope_scaling=None)
    decoder = _decoder_params(cfg)
    write_decoder(cfg, decoder, tmp_path / "llama", "meta")
    enc_cfg, params = fresh_encoder(tmp_path / "llama", n_truncated_layers=2, out_dims=(40,), hidden_dim=24)
    assert enc_cfg.backbone.n_layers == 4 and enc_cfg.compress_rates == (-8,)
    for kept, source in zip(jax.tree.leaves(params["layers"]["block"]), jax.tree.leaves(decoder["layers"]["block"])):
        np.testing.assert_array_equal(kept, source[:3])
