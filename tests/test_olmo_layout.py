"""OLMo in allenai's own layout (the model.safetensors and params.json the reference's README
downloads and writes) reads to the same decoder as the -hf layout, bit for bit.

The fixture is made here from a tiny transformers OlmoForCausalLM: its tensors are fused under
OLMo's own key names (as transformers' convert_olmo_weights_to_hf.py splits them: att_proj = q, k, v;
ff_proj = up, gate) with the safetensors library, not with arc_jax."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import OlmoConfig, OlmoForCausalLM

from arc_jax.convert import ConversionError, detect_format, read_decoder, read_decoder_config
from test_decoder_roundtrip import assert_same_params

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
             bos_token_id=None, eos_token_id=None, pad_token_id=None)


def own_layout(state: dict, n_layers: int, tied: bool) -> dict[str, np.ndarray]:
    t = {k: v.numpy() for k, v in state.items()}
    own = {"model.transformer.wte.weight": t["model.embed_tokens.weight"]}
    if not tied:
        own["model.transformer.ff_out.weight"] = t["lm_head.weight"]
    for i in range(n_layers):
        hf, block = f"model.layers.{i}.", f"model.transformer.blocks.{i}."
        own[block + "att_proj.weight"] = np.concatenate([t[hf + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        own[block + "attn_out.weight"] = t[hf + "self_attn.o_proj.weight"]
        own[block + "ff_proj.weight"] = np.concatenate([t[hf + "mlp.up_proj.weight"], t[hf + "mlp.gate_proj.weight"]])
        own[block + "ff_out.weight"] = t[hf + "mlp.down_proj.weight"]
    return own


def write_both(root, kv_heads=4, tied=False):
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(**SHAPE, num_key_value_heads=kv_heads, tie_word_embeddings=tied)).eval()
    model.save_pretrained(root / "hf")
    (root / "own").mkdir()
    save_file(own_layout(model.state_dict(), SHAPE["num_hidden_layers"], tied), str(root / "own" / "model.safetensors"))
    # The reference README's params.json for OLMo 7B, at this size.
    (root / "own" / "params.json").write_text(json.dumps({"dim": 64, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-05,
                                                          "vocab_size": 128}))
    return root / "hf", root / "own"


@pytest.mark.parametrize("kv_heads, tied", [(4, False), (2, False), (4, True)])
def test_own_layout_equals_the_hf_layout_bit_for_bit(tmp_path, kv_heads, tied):
    hf, own = write_both(tmp_path, kv_heads, tied)
    assert detect_format(own, "decoder") == "olmo"
    cfg_hf, params_hf = read_decoder(hf)
    cfg_own, params_own = read_decoder(own)
    assert cfg_own == cfg_hf and cfg_own.n_kv_heads == kv_heads and cfg_own.tie_embeddings == tied
    assert read_decoder_config(own) == cfg_hf
    assert_same_params(params_own, params_hf)


def test_allenai_config_json_stands_for_params_json(tmp_path):
    hf, own = write_both(tmp_path)
    (own / "params.json").unlink()
    (own / "config.json").write_text(json.dumps({"model_type": "olmo", "d_model": 64, "n_heads": 4, "n_layers": 2,
                                                 "rope_theta": 10000, "embedding_size": 128}))
    assert detect_format(own, "decoder") == "olmo"
    assert read_decoder(own)[0] == read_decoder(hf)[0]


def test_bad_own_layouts_name_the_file_and_key(tmp_path):
    _, own = write_both(tmp_path)
    (own / "params.json").write_text(json.dumps({"dim": 64, "n_heads": 4, "n_layers": 3}))
    with pytest.raises(ConversionError, match=r"model.safetensors: missing keys \[model.transformer.blocks.2.att_proj"):
        read_decoder(own)
    (own / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2}))
    with pytest.raises(ConversionError, match=r"params.json: n_heads: missing"):
        read_decoder(own)
    (own / "params.json").unlink()
    with pytest.raises(ConversionError, match="needs a params.json"):
        read_decoder(own)
