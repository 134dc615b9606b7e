"""Checkpoints named by Hugging Face hub id, offline: a cache laid out as huggingface_hub lays it
out (models--owner--name/{blobs, snapshots/<commit>, refs/main}) with HF_HUB_OFFLINE set, read by
load_encoder, load_decoder, `arc-jax convert` and `arc-jax generate` (whose model loading `arc-jax
eval` shares). Skipped without huggingface_hub, the optional 'hub' extra."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

import arc_jax
import reference_encoder as ref
import tiny_tokenizers as tiny
from arc_jax.cli import main
from arc_jax.convert import ConversionError, read_decoder
from test_decoder_roundtrip import assert_same_params

huggingface_hub = pytest.importorskip("huggingface_hub", reason="hub ids need the optional huggingface_hub")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ENCODER_ID, DECODER_ID = "kyutai/ARC-tiny_Encoder", "Qwen/Qwen3-tiny"


def add_to_cache(cache, repo_id: str, folder) -> None:
    """The files of `folder` as the hub cache stores a snapshot: content-named blobs, relative links."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for d in (repo / "blobs", repo / "refs", snapshot):
        d.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A released encoder (64 wide out) and a Qwen3 decoder (64 wide), each with its tokenizer."""
    root = tmp_path_factory.mktemp("models")
    lines = tiny.corpus()
    config = ref.make_config(vocab_size=512, out_dim=64)
    encoder = ref.write_released(root / "encoder", config, ref.random_weights(config, seed=0))
    (encoder / "tokenizer.json").write_text(tiny.train_hf_tokenizer_json(lines))
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=32, vocab_size=512, tie_word_embeddings=True,
                                 bos_token_id=None, eos_token_id=None, pad_token_id=None)).save_pretrained(
        root / "decoder")
    (root / "decoder" / "tokenizer.json").write_text(
        tiny.train_hf_tokenizer_json(lines, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>")))
    (root / "decoder" / "tokenizer_config.json").write_text(json.dumps({"bos_token": None, "eos_token": "<|im_end|>"}))
    return root


@pytest.fixture
def offline_cache(local, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    add_to_cache(cache, ENCODER_ID, local / "encoder")
    add_to_cache(cache, DECODER_ID, local / "decoder")
    # The library's own settings (read from the environment when it is imported).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder named like the ids
    return cache


def test_load_encoder_and_decoder_by_hub_id(local, offline_cache):
    encoder, decoder = arc_jax.load_encoder(ENCODER_ID), arc_jax.load_decoder(DECODER_ID)
    assert_same_params(encoder.params, arc_jax.load_encoder(local / "encoder").params)
    assert decoder.config == arc_jax.load_decoder(local / "decoder").config and decoder.config.qk_norm
    assert_same_params(decoder.params, arc_jax.load_decoder(local / "decoder").params)


def test_convert_and_generate_take_hub_ids(local, offline_cache, tmp_path, capsys):
    assert main(["convert", DECODER_ID, str(tmp_path / "converted")]) == 0
    cfg, params = read_decoder(tmp_path / "converted")
    assert_same_params(params, read_decoder(local / "decoder")[1])
    (tmp_path / "context.txt").write_text("The compressed context encoder reads vectors.")
    capsys.readouterr()
    answers = []
    for encoder, decoder in ((ENCODER_ID, DECODER_ID), (local / "encoder", local / "decoder")):
        assert main(["generate", "--encoder", str(encoder), "--decoder", str(decoder), "--context", "context.txt",
                     "--prompt", "Question: who reads? Answer:", "--max-new-tokens", "4"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1]  # the same models and tokenizers (found in the snapshots) either way


def test_an_id_missing_from_the_offline_cache_is_one_line(offline_cache):
    with pytest.raises(ConversionError, match=r"^kyutai/absent: no such folder, and no Hugging Face hub snapshot "
                                              r"of that id \(LocalEntryNotFoundError") as error:
        arc_jax.load_encoder("kyutai/absent")
    assert "\n" not in str(error.value)


def test_without_huggingface_hub_the_error_says_what_to_install(offline_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub -> ImportError
    with pytest.raises(ConversionError, match=r"install huggingface_hub \(pip install 'arc-jax\[hub\]'\)"):
        arc_jax.load_decoder(DECODER_ID)


def test_local_folders_never_touch_the_hub(local, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert arc_jax.load_decoder(local / "decoder").config.qk_norm
    np.testing.assert_array_equal(arc_jax.load_encoder(local / "encoder").compress([[1, 2, 3]])[0].shape, (2, 64))
