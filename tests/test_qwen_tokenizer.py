"""Qwen's tokenizer.json (no BOS: tokenizer_config.json says "bos_token": null) and OLMo's bare
tokenizer.json (an end token, no begin token) through the one tokenizer interface, and training
samples built with an encoder tokenizer other than the decoder's, in both directions of the
Llama 3 / Qwen pair. Tiny tokenizers are trained here (no downloads)."""

import json

import numpy as np
import pytest

import tiny_tokenizers as tiny
from arc_jax.data import tasks
from arc_jax.data.tokenizers import LLAMA3_SPLIT_PATTERN, HFTokenizer, load_tokenizer

pytest.importorskip("tokenizers")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="module")
def lines():
    return tiny.corpus()


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory, lines):
    """A Qwen-style folder: byte-level BPE tokenizer.json and the tokenizer_config.json fields Qwen3 8B has."""
    folder = tmp_path_factory.mktemp("qwen")
    (folder / "tokenizer.json").write_text(tiny.train_hf_tokenizer_json(lines, special_tokens=QWEN_SPECIALS))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False}))
    return folder


@pytest.fixture(scope="module")
def llama3(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
    path.write_text(tiny.tiktoken_file_text(tiny.train_byte_bpe_ranks(lines, LLAMA3_SPLIT_PATTERN)))
    return load_tokenizer(path)


def test_qwen_tokenizer_has_no_bos_and_its_configured_eos(qwen_folder, lines):
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(qwen_folder)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(qwen_folder / "tokenizer.json"))
    assert isinstance(tok, HFTokenizer) and tok.bos_id is None
    assert (tok.eos_id, tok.pad_id) == (fast.convert_tokens_to_ids("<|im_end|>"),
                                        fast.convert_tokens_to_ids("<|endoftext|>"))
    for line in lines[:50]:
        ids = fast.encode(line, add_special_tokens=False)
        assert tok.encode(line) == ids
        assert tok.encode(line, bos=True, eos=True) == ids + [tok.eos_id]  # bos asked, none added
        assert tok.decode(ids + [tok.eos_id]) == line
    assert tok.encode("<|im_start|>") != [fast.convert_tokens_to_ids("<|im_start|>")]  # specials in text stay text


def test_olmo_bare_tokenizer_json_has_no_bos(tmp_path, lines):
    (tmp_path / "tokenizer.json").write_text(tiny.train_hf_tokenizer_json(
        lines, special_tokens=("|||IP_ADDRESS|||", "<|padding|>", "<|endoftext|>")))
    tok = load_tokenizer(tmp_path)
    assert tok.bos_id is None and tok.eos_id == tok._tokenizer.token_to_id("<|endoftext|>")


def test_an_explicit_bos_argument_still_wins(qwen_folder):
    tok = HFTokenizer(qwen_folder / "tokenizer.json", bos_token="<|im_start|>")
    assert tok.bos_id == tok._tokenizer.token_to_id("<|im_start|>")


TEXT = "The compressed context encoder reads vectors. The decoder reads the answer text, café über."


@pytest.mark.parametrize("encoder_side", ["llama3", "qwen"])
def test_samples_with_a_different_encoder_tokenizer(encoder_side, qwen_folder, llama3):
    """Llama 3 encoder for a Qwen decoder, and a Qwen encoder for a Llama 3 decoder: the encoder
    reads its own tokens of the same text, the decoder side gets BOS only where it has one. The
    encoder's BOS follows the decoder document's, as in the reference (sequence_iterators.py: bos =
    llm bos_id in the window), so a BOS-less decoder's documents reach the encoder without one."""
    qwen = load_tokenizer(qwen_folder)
    encoder_tok, decoder_tok = (llama3, qwen) if encoder_side == "llama3" else (qwen, llama3)
    sample, = tasks.reference_reconstruction(TEXT, decoder_tok, encoder_tok, max_len=256)
    expected = tuple(encoder_tok.encode(TEXT, bos=decoder_tok.bos_id is not None, eos=True))
    assert sample.contexts == (expected,) and None not in expected
    assert (sample.x[0] == llama3.bos_id) == (decoder_tok is llama3)
    assert decoder_tok.decode(sample.x + sample.y[-1:]) == TEXT
    record = tasks.QARecord("Who reads the vectors?", ("the decoder",), (TEXT,))
    few = tasks.few_shot([record, record], np.random.default_rng(0), decoder_tok, encoder_tok)
    assert len(few.contexts) == 2 and all(None not in c for c in few.contexts)
    assert encoder_tok.decode(few.contexts[-1]) == TEXT
    assert None not in few.x and "the decoder" in decoder_tok.decode([t for t, m in zip(few.y, few.loss_mask) if m])
