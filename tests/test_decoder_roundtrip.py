"""Decoder checkpoints survive read -> arc_jax params -> write bit for bit, config included.

Hugging Face: float32, bfloat16, sharded with an index, tied embeddings. Meta: two model-parallel
consolidated.NN.pth shards (Llama-style params.json without hidden_dim, vocab_size -1) and a
Mistral-style consolidated.safetensors (head_dim and hidden_dim stated). Across layouts too.
"""

import json

import ml_dtypes
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from arc_jax.convert import detect_format, hf, meta, read_decoder, write_decoder
from arc_jax.convert.safetensors_io import SafetensorsFile, write_safetensors
from arc_jax.model.config import BackboneConfig, RopeScaling

HF_SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=128, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def save_hf(path, dtype=torch.float32, seed=0, **save_options):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**HF_SHAPE, tie_word_embeddings=save_options.pop("tied", False)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
    model.to(dtype).save_pretrained(path, **save_options)
    return path


def hf_tensors(path) -> dict[str, np.ndarray]:
    tensors = {}
    for p in hf.weight_files(path):
        f = SafetensorsFile(p)
        tensors.update({k: np.array(f.get(k)) for k in f.keys()})
    return tensors


def assert_same_tensors(found: dict, expected: dict):
    assert sorted(found) == sorted(expected)
    for key, array in expected.items():
        assert found[key].dtype == array.dtype and found[key].shape == array.shape, key
        assert found[key].tobytes() == array.tobytes(), key


def assert_same_params(a, b):
    if isinstance(b, dict):
        assert sorted(a) == sorted(b)
        for k in b:
            assert_same_params(a[k], b[k])
    else:
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("variant", ["float32", "bfloat16", "sharded", "tied"])
def test_hf_round_trip_is_bit_exact(variant, tmp_path):
    options = {"sharded": {"max_shard_size": "20KB"}, "tied": {"tied": True}}.get(variant, {})
    source = save_hf(tmp_path / "in", torch.bfloat16 if variant == "bfloat16" else torch.float32, **options)
    assert (source / "model.safetensors.index.json").is_file() == (variant == "sharded")
    assert detect_format(source, "decoder") == "hf"
    cfg, params = read_decoder(source)
    assert params["tok_embeddings"]["embedding"].dtype == (ml_dtypes.bfloat16 if variant == "bfloat16" else np.float32)
    assert cfg.tie_embeddings == ("output" not in params) == (variant == "tied")  # tied: no separate head

    write_decoder(cfg, params, tmp_path / "out", "hf")
    assert_same_tensors(hf_tensors(tmp_path / "out"), hf_tensors(source))
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["tie_word_embeddings"] == (variant == "tied")
    cfg2, params2 = read_decoder(tmp_path / "out")
    assert cfg2 == cfg
    assert_same_params(params2, params)


def test_hf_writer_shards_by_size(tmp_path):
    cfg, params = read_decoder(save_hf(tmp_path / "in"))
    write_decoder(cfg, params, tmp_path / "out", "hf", max_shard_bytes=30_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / "out" / f).is_file() for f in files)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in hf_tensors(tmp_path / "in").values())
    assert_same_tensors(hf_tensors(tmp_path / "out"), hf_tensors(tmp_path / "in"))


# ---- Meta ------------------------------------------------------------------------------------

LLAMA_PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": -1, "multiple_of": 32,
                "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True}
# int(8 * 64 / 3) = 170; int(1.3 * 170) = 221; rounded up to a multiple of 32: 224.
LLAMA_CFG = BackboneConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=224, vocab_size=128,
                           rope_theta=500000.0, norm_eps=1e-5, rope_scaling=RopeScaling())
MISTRAL_PARAMS = {"dim": 64, "n_layers": 2, "head_dim": 24, "hidden_dim": 100, "n_heads": 4, "n_kv_heads": 2,
                  "norm_eps": 1e-05, "vocab_size": 96, "rope_theta": 1000000.0}
MISTRAL_CFG = BackboneConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=24, hidden_dim=100, vocab_size=96,
                             rope_theta=1e6, norm_eps=1e-5)


def meta_checkpoint(cfg: BackboneConfig, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """Random full (unsharded) Meta-named tensors for `cfg`."""
    g = torch.Generator().manual_seed(seed)
    d, q, kv, f, v = cfg.dim, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.hidden_dim, cfg.vocab_size
    shapes = {"tok_embeddings.weight": (v, d)}
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.attention.wq.weight": (q, d), f"layers.{i}.attention.wk.weight": (kv, d),
                       f"layers.{i}.attention.wv.weight": (kv, d), f"layers.{i}.attention.wo.weight": (d, q),
                       f"layers.{i}.feed_forward.w1.weight": (f, d), f"layers.{i}.feed_forward.w2.weight": (d, f),
                       f"layers.{i}.feed_forward.w3.weight": (f, d), f"layers.{i}.attention_norm.weight": (d,),
                       f"layers.{i}.ffn_norm.weight": (d,)})
    shapes.update({"norm.weight": (d,), "output.weight": (v, d)})
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


def split_for_model_parallel(full: dict[str, torch.Tensor], shards: int) -> list[dict[str, torch.Tensor]]:
    out = [{} for _ in range(shards)]
    for key, t in full.items():
        axis = meta.split_axis(key)
        pieces = [t] * shards if axis is None else torch.chunk(t, shards, axis)
        for shard, piece in zip(out, pieces):
            shard[key] = piece.clone()
    return out


def write_meta_pth(folder, args: dict, shards: list[dict[str, torch.Tensor]]):
    folder.mkdir()
    (folder / "params.json").write_text(json.dumps(args))
    for i, shard in enumerate(shards):
        torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    return folder


def load_pth(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def test_meta_two_pth_shards_round_trip(tmp_path):
    full = meta_checkpoint(LLAMA_CFG, torch.bfloat16, seed=1)
    shards = split_for_model_parallel(full, 2)
    shards[0]["rope.freqs"] = torch.ones(8)  # Llama 2 checkpoints carry this buffer; it is ignored
    source = write_meta_pth(tmp_path / "in", LLAMA_PARAMS, shards)
    assert detect_format(source, "decoder") == "meta"
    cfg, params = read_decoder(source)
    assert cfg == LLAMA_CFG  # hidden_dim from multiple_of/ffn_dim_multiplier, vocab from the table
    assert params["tok_embeddings"]["embedding"].dtype == ml_dtypes.bfloat16

    write_decoder(cfg, params, tmp_path / "out", "meta", shards=2)
    for i, shard in enumerate(shards):
        written = load_pth(tmp_path / "out" / f"consolidated.{i:02d}.pth")
        shard.pop("rope.freqs", None)
        assert sorted(written) == sorted(shard)
        for key, t in shard.items():
            assert written[key].dtype == t.dtype and torch.equal(written[key].view(torch.int16), t.view(torch.int16))
    args = json.loads((tmp_path / "out" / "params.json").read_text())
    assert (args["head_dim"], args["hidden_dim"], args["vocab_size"]) == (16, 224, 128)
    cfg2, params2 = read_decoder(tmp_path / "out")
    assert cfg2 == cfg
    assert_same_params(params2, params)

    # The shards were joined in the right order: one unsharded file equals the full tensors.
    write_decoder(cfg, params, tmp_path / "single", "meta", container="safetensors")
    single = SafetensorsFile(tmp_path / "single" / "consolidated.safetensors")
    assert_same_tensors({k: np.array(single.get(k)) for k in single.keys()},
                        {k: as_numpy(t) for k, t in full.items()})


def test_mistral_consolidated_safetensors_round_trip(tmp_path):
    full = {k: as_numpy(t) for k, t in meta_checkpoint(MISTRAL_CFG, torch.float32, seed=2).items()}
    source = tmp_path / "in"
    source.mkdir()
    (source / "params.json").write_text(json.dumps(MISTRAL_PARAMS))
    write_safetensors(source / "consolidated.safetensors", full)
    cfg, params = read_decoder(source)
    assert cfg == MISTRAL_CFG

    write_decoder(cfg, params, tmp_path / "out", "meta", container="safetensors")
    out = SafetensorsFile(tmp_path / "out" / "consolidated.safetensors")
    assert_same_tensors({k: np.array(out.get(k)) for k in out.keys()}, full)
    assert json.loads((tmp_path / "out" / "params.json").read_text()) == MISTRAL_PARAMS
    assert read_decoder(tmp_path / "out")[0] == cfg


def test_hf_to_meta_to_hf_is_bit_exact(tmp_path):
    source = save_hf(tmp_path / "in", torch.bfloat16, seed=3)
    cfg, params = read_decoder(source)
    write_decoder(cfg, params, tmp_path / "meta", "meta", shards=2)
    cfg_meta, params_meta = read_decoder(tmp_path / "meta")
    assert cfg_meta == cfg
    write_decoder(cfg_meta, params_meta, tmp_path / "out", "hf")
    assert_same_tensors(hf_tensors(tmp_path / "out"), hf_tensors(source))
