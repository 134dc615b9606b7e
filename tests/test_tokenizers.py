"""Tokenizers: round trips, bos/eos, special-token strings as text, the Llama 3 split pattern,
format detection, bad files, retokenization. Tiny tokenizers are trained here on a generated corpus."""

import base64
import pickle
import sys

import numpy as np
import pytest
import regex
import sentencepiece
import tiny_tokenizers as tiny

from arc_jax.data.bad_records import DataError
from arc_jax.data.tokenizers import (
    LLAMA3_SPECIAL_TOKENS,
    LLAMA3_SPLIT_PATTERN,
    HFTokenizer,
    Llama3Tokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    retokenize,
)

TEXTS = [
    "The encoder reads the document.",
    "Café, naïve élève in Zürich — señor über alles!",
    "Emoji 🙂🚀 and unseen ones 🦜🧪, CJK 東京 and Ελληνικά.",
    "I'm sure they've said it's 1234567 or 3.14\n\nNew paragraph\twith  two spaces  ",
    "",
]


@pytest.fixture(scope="module")
def lines():
    return tiny.corpus()


@pytest.fixture(scope="module")
def files(tmp_path_factory, lines):
    """One folder per format, each with the file name its release uses."""
    root = tmp_path_factory.mktemp("tokenizers")
    ranks = tiny.train_byte_bpe_ranks(lines, LLAMA3_SPLIT_PATTERN)
    (root / "llama3").mkdir()
    (root / "llama3" / "tokenizer.model").write_text(tiny.tiktoken_file_text(ranks))
    (root / "mistral").mkdir()
    (root / "mistral" / "tokenizer.model.v3").write_bytes(tiny.train_sentencepiece(lines))
    (root / "hf").mkdir()
    (root / "hf" / "tokenizer.json").write_text(tiny.train_hf_tokenizer_json(lines))
    return {"root": root, "ranks": ranks, "llama3": root / "llama3" / "tokenizer.model",
            "spm": root / "mistral" / "tokenizer.model.v3", "hf": root / "hf" / "tokenizer.json"}


@pytest.fixture(scope="module")
def tokenizers(files):
    return {"llama3": Llama3Tokenizer(files["llama3"]), "spm": SentencePieceTokenizer(files["spm"]),
            "hf": HFTokenizer(files["hf"])}


FORMATS = ["llama3", "spm", "hf"]


# ---- every format ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tokenizers, kind, text):
    tok = tokenizers[kind]
    ids = tok.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids, dtype=np.int64)) == text  # ids straight from a numpy batch


@pytest.mark.parametrize("kind", FORMATS)
def test_bos_eos_placement_and_decode_drops_them(tokenizers, kind):
    tok = tokenizers[kind]
    text = TEXTS[1]
    ids = tok.encode(text)
    assert tok.encode(text, bos=True) == [tok.bos_id] + ids
    assert tok.encode(text, eos=True) == ids + [tok.eos_id]
    assert tok.encode(text, bos=True, eos=True) == [tok.bos_id] + ids + [tok.eos_id]
    assert tok.encode("", bos=True, eos=True) == [tok.bos_id, tok.eos_id]
    assert tok.bos_id != tok.eos_id
    assert tok.decode(tok.encode(text, bos=True, eos=True)) == text


@pytest.mark.parametrize(("kind", "text"), [
    ("llama3", "<|begin_of_text|>hi<|eot_id|><|end_of_text|><|reserved_special_token_5|>"),
    ("spm", "<s>hi</s><unk>"),
    ("hf", "<s>hi</s><pad>"),
])
def test_special_token_strings_in_text_stay_text(tokenizers, kind, text):
    tok = tokenizers[kind]
    ids = tok.encode(text)
    assert tok.bos_id not in ids and tok.eos_id not in ids and (tok.pad_id is None or tok.pad_id not in ids)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", FORMATS)
def test_pickles_for_worker_processes(tokenizers, kind):
    tok = tokenizers[kind]
    clone = pickle.loads(pickle.dumps(tok))
    text = TEXTS[2] + "<s></s><|begin_of_text|>"  # special-token strings still text after unpickling
    assert clone.encode(text, bos=True) == tok.encode(text, bos=True)
    assert (clone.bos_id, clone.eos_id, clone.pad_id, clone.vocab_size) == (tok.bos_id, tok.eos_id, tok.pad_id,
                                                                           tok.vocab_size)


# ---- Llama 3 (tiktoken) ---------------------------------------------------------------------


def test_llama3_special_ids_follow_the_ranks(tokenizers, files):
    tok, n = tokenizers["llama3"], len(files["ranks"])
    assert tok.n_ranks == n and tok.vocab_size == n + 256
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (n, n + 1, n + 4)
    assert len(LLAMA3_SPECIAL_TOKENS) == len(set(LLAMA3_SPECIAL_TOKENS)) == 256
    expected = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "<|reserved_special_token_0|>": 2,
                "<|reserved_special_token_1|>": 3, "<|finetune_right_pad_id|>": 4, "<|step_id|>": 5,
                "<|start_header_id|>": 6, "<|end_header_id|>": 7, "<|eom_id|>": 8, "<|eot_id|>": 9,
                "<|python_tag|>": 10, "<|reserved_special_token_2|>": 11, "<|reserved_special_token_246|>": 255}
    assert {name: tok.special_tokens[name] - n for name in expected} == expected


def test_llama3_matches_plain_python_bpe(tokenizers, files, lines):
    """tiktoken with our pattern and ranks = byte-level BPE written out in Python."""
    tok, ranks = tokenizers["llama3"], files["ranks"]
    merged = 0
    for text in lines[:100] + TEXTS:
        ids = tok.encode(text)
        assert ids == tiny.reference_bpe_encode(text, ranks, LLAMA3_SPLIT_PATTERN), text
        merged += sum(i >= 256 for i in ids)
    assert merged > 100  # the learnt merges are in use, not only single bytes


@pytest.mark.parametrize(("text", "pieces"), [
    ("I'm here", ["I", "'m", " here"]),
    ("DON'T SHOUT, IT'S", ["DON", "'T", " SHOUT", ",", " IT", "'S"]),  # contractions ignore case
    ("they've we'll she'd", ["they", "'ve", " we", "'ll", " she", "'d"]),
    ("1234567", ["123", "456", "7"]),  # numbers: groups of at most 3 digits, from the left
    ("pay 12345 now", ["pay", " ", "123", "45", " now"]),  # no space glued to a number
    ("abc123def", ["abc", "123", "def"]),
    ("  two  spaces", [" ", " two", " ", " spaces"]),  # a space run leaves its last space to the word
    ("end.\n\nNext", ["end", ".\n\n", "Next"]),
    ("x\n\n  y", ["x", "\n\n", " ", " y"]),
    ("café!?", ["café", "!?"]),
])
def test_llama3_split_pattern(text, pieces):
    assert regex.findall(LLAMA3_SPLIT_PATTERN, text) == pieces


def test_llama3_pattern_applies_before_merges(tmp_path):
    """A hand-written ranks file: single bytes plus '1234' and 'hello' built from sub-parts."""
    merges = [b"12", b"123", b"1234", b"he", b"hel", b"hell", b"hello"]
    ranks = {bytes([b]): b for b in range(256)} | {m: 256 + i for i, m in enumerate(merges)}
    path = tmp_path / "tokenizer.model"
    path.write_text(tiny.tiktoken_file_text(ranks))
    tok = load_tokenizer(path)
    assert isinstance(tok, Llama3Tokenizer)
    assert tok.encode("hello") == [ranks[b"hello"]]
    assert tok.encode("1234") == [ranks[b"123"], ranks[b"4"]]  # "1234" is never reached: digits split by 3
    assert tok.bos_id == 256 + len(merges) and tok.eos_id == 256 + len(merges) + 1


def test_llama3_cuts_long_runs_like_meta(tokenizers):
    """Runs over 25,000 (non-)whitespace characters are cut before tiktoken, as Meta's encode does."""
    tok = tokenizers["llama3"]
    text = "der" * 10_000 + " coder"
    expected = tok._encoding.encode_ordinary(text[:25_000]) + tok._encoding.encode_ordinary(text[25_000:])
    assert tok.encode(text) == expected
    assert tok.encode(text) != tok._encoding.encode_ordinary(text)  # the cut changes a merge here
    assert tok.decode(tok.encode(text)) == text


# ---- sentencepiece and tokenizer.json against their own libraries ---------------------------


def test_sentencepiece_matches_sentencepiece_api(tokenizers, files, lines):
    tok = tokenizers["spm"]
    sp = sentencepiece.SentencePieceProcessor(model_file=str(files["spm"]))
    for text in lines[:50] + TEXTS:
        assert tok.encode(text, bos=True, eos=True) == sp.encode(text, add_bos=True, add_eos=True)
        assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text))
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (sp.bos_id(), sp.eos_id(), None, sp.vocab_size())


def test_hf_matches_transformers(tokenizers, files, lines):
    transformers = pytest.importorskip("transformers")
    tok = tokenizers["hf"]
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(files["hf"]), split_special_tokens=True)
    for text in lines[:50] + TEXTS + ["<s>hi</s>"]:
        assert tok.encode(text) == fast.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == fast.decode(tok.encode(text), skip_special_tokens=True)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (fast.convert_tokens_to_ids("<s>"),
                                                   fast.convert_tokens_to_ids("</s>"), None)
    assert tok.vocab_size == len(fast)


def test_hf_special_ids_from_config_or_arguments(tmp_path, files):
    (tmp_path / "tokenizer.json").write_bytes(files["hf"].read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(tiny.tokenizer_config_json(bos="</s>", eos="<s>", pad="<pad>"))
    tok = load_tokenizer(tmp_path)
    ids = {t: tok._tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>")}
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (ids["</s>"], ids["<s>"], ids["<pad>"])  # config wins
    tok = HFTokenizer(tmp_path / "tokenizer.json", bos_token="<pad>", eos_token="</s>")
    assert (tok.bos_id, tok.eos_id) == (ids["<pad>"], ids["</s>"])  # arguments win


def test_hf_without_bos_eos_says_how_to_give_them(tmp_path, lines):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel()
    bare.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    path = tmp_path / "tokenizer.json"
    path.write_text(bare.to_str())
    with pytest.raises(DataError, match=r"no bos token .* pass bos_token="):
        load_tokenizer(path)


def test_hf_without_tokenizers_library(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ImportError
    with pytest.raises(DataError, match="pip install tokenizers") as error:
        load_tokenizer(files["hf"])
    assert str(files["hf"]) in str(error.value)


# ---- format detection and bad input ---------------------------------------------------------


def test_load_tokenizer_reads_the_format_from_the_files(files, tmp_path):
    assert isinstance(load_tokenizer(files["root"] / "llama3"), Llama3Tokenizer)
    assert isinstance(load_tokenizer(files["root"] / "mistral"), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(files["root"] / "hf"), HFTokenizer)
    for kind, misleading_name, cls in [("llama3", "tokenizer.json", Llama3Tokenizer),
                                       ("spm", "Meta-Llama-3.1-8B.model", SentencePieceTokenizer),
                                       ("hf", "tokenizer.model.v3", HFTokenizer)]:
        misnamed = tmp_path / misleading_name  # names say nothing: the content decides
        misnamed.write_bytes(files[kind].read_bytes())
        assert isinstance(load_tokenizer(misnamed), cls)
    # a Hugging Face Llama 3 folder: tokenizer.json at the top is preferred to original/tokenizer.model
    hf_llama = tmp_path / "hf_llama"
    (hf_llama / "original").mkdir(parents=True)
    (hf_llama / "original" / "tokenizer.model").write_bytes(files["llama3"].read_bytes())
    assert isinstance(load_tokenizer(hf_llama), Llama3Tokenizer)
    (hf_llama / "tokenizer.json").write_bytes(files["hf"].read_bytes())
    assert isinstance(load_tokenizer(hf_llama), HFTokenizer)
    # a Hugging Face Mistral folder: the sentencepiece model first, as the reference reads it
    (hf_llama / "tokenizer.model.v3").write_bytes(files["spm"].read_bytes())
    assert isinstance(load_tokenizer(hf_llama), SentencePieceTokenizer)


def _ranks_text(extra_lines=(), skip_bytes=()):
    kept = [bytes([b]) for b in range(256) if b not in skip_bytes]
    ranks = [f"{base64.b64encode(token).decode()} {rank}" for rank, token in enumerate(kept)]
    return "\n".join(ranks[:2] + list(extra_lines) + ranks[2:]) + "\n"


BAD_FILES = {
    "empty file": (b"", "empty tokenizer file"),
    "plain text": (b"just some words\n", "unknown tokenizer format"),
    "binary junk": (bytes(range(200, 256)) * 4, "unknown tokenizer format"),
    "bad base64": (_ranks_text(["@@notbase64@@ 999"]).encode(), r":3: not a '<base64 token> <rank>' line"),
    "rank not a number": (_ranks_text(["YWI= x"]).encode(), r":3: not a '<base64 token> <rank>' line"),
    "duplicate rank": (_ranks_text(["YWI= 5"]).encode(), "not 0..256, each once"),
    "missing bytes": (_ranks_text(skip_bytes=(7, 200)).encode(), "2 of the 256 single bytes have no rank"),
    "truncated sentencepiece": (None, "not a readable sentencepiece model"),
    "broken json": (b'{"model": {"type": "BPE", ', "not a readable Hugging Face tokenizer.json"),
    "json, not a tokenizer": (b'{"config": {"pattern": "x"}, "vocab": []}', "not a readable Hugging Face"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_one_line_data_errors(case, files, tmp_path):
    content, message = BAD_FILES[case]
    if content is None:
        content = files["spm"].read_bytes()[:3000]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        load_tokenizer(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_paths_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such tokenizer file or folder"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no tokenizer file in this folder"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="cannot read tokenizer file"):
        Llama3Tokenizer(tmp_path / "nowhere.model")


def test_a_replaced_ranks_file_is_read_afresh(tmp_path):
    """tiktoken's own loader caches by path name; ours must see the new content."""
    path = tmp_path / "tokenizer.model"
    path.write_text(_ranks_text())
    assert load_tokenizer(path).bos_id == 256
    path.write_text(_ranks_text() + f"{base64.b64encode(b'ab').decode()} 256\n")
    assert load_tokenizer(path).bos_id == 257


# ---- retokenization -------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), [("llama3", "spm"), ("spm", "hf"), ("hf", "llama3"), ("spm", "llama3")])
def test_retokenize_gives_the_targets_encoding_of_the_text(tokenizers, lines, source, target):
    src, tgt = tokenizers[source], tokenizers[target]
    for text in lines[:30] + TEXTS:
        ids = src.encode(text, bos=True, eos=True)  # control tokens are not text: dropped on the way
        assert retokenize(ids, src, tgt) == tgt.encode(text)
    assert src.encode(TEXTS[1]) != tgt.encode(TEXTS[1])  # the two tokenizers really differ
