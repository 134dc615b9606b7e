"""Tokenizers behind one interface: Meta's Llama 3 tiktoken file, sentencepiece (Llama 2, Mistral)
and Hugging Face tokenizer.json. `load_tokenizer` reads the format from the files, never from a name.

Every tokenizer encodes special-token strings found in text as plain text, and `decode` drops
control tokens (bos, eos, pad, ...): they are not text.
"""

from __future__ import annotations

import base64
import binascii
import json
import pathlib
import re
from collections.abc import Iterator, Sequence

import sentencepiece
import tiktoken

from arc_jax.data.bad_records import DataError

# Meta's Llama 3 split pattern (meta-llama/llama-models, models/llama3_1/api/tokenizer.py).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama 3.1's 256 special tokens, in id order after the ranks (same source as the pattern).
_LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
LLAMA3_SPECIAL_TOKENS = _LLAMA3_NAMED_SPECIALS + [
    f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(_LLAMA3_NAMED_SPECIALS))
]
# Meta's encode cuts long inputs like this before tiktoken (tiktoken issue 195); kept for identical ids.
_TIKTOKEN_MAX_ENCODE_CHARS = 400_000
_MAX_NO_WHITESPACES_CHARS = 25_000

# Tokens taken as bos / eos in a tokenizer.json when neither the caller nor tokenizer_config.json names one.
_KNOWN_HF_SPECIALS = {
    "bos": ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"),
    "eos": ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"),
}
# Where a folder's tokenizer is looked for, first match wins (Mistral v3 names its file .v3).
TOKENIZER_FILES = ("tokenizer.model.v3", "tokenizer.model", "tokenizer.json", "original/tokenizer.model")
_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+=*[ \t]+\d+\r?")


class Tokenizer:
    """Text <-> ids. Subclasses set name (the format), path, bos_id, eos_id, pad_id (bos_id and
    pad_id None when the model has none) and vocab_size, and implement `_encode` (no bos/eos) and
    `decode`."""

    name: str
    path: str
    bos_id: int | None
    eos_id: int
    pad_id: int | None
    vocab_size: int

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of `text`; `bos` adds nothing for a model without BOS (bos_id None: Qwen, OLMo)."""
        return [self.bos_id] * (bos and self.bos_id is not None) + self._encode(text) + [self.eos_id] * eos

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, vocab_size={self.vocab_size})"


class Llama3Tokenizer(Tokenizer):
    """Meta's Llama 3.x `tokenizer.model`: tiktoken BPE ranks, then 256 special tokens (id n_ranks + i)."""

    def __init__(self, path: str | pathlib.Path):
        self.name, self.path = "llama3 tiktoken", str(path)
        ranks = read_tiktoken_ranks(path)
        self.n_ranks = len(ranks)
        self.special_tokens = {token: self.n_ranks + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)}
        self._encoding = tiktoken.Encoding(
            pathlib.Path(path).name,
            pat_str=LLAMA3_SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.pad_id = self.special_tokens["<|finetune_right_pad_id|>"]
        self.vocab_size = self.n_ranks + len(LLAMA3_SPECIAL_TOKENS)

    def _encode(self, text: str) -> list[int]:
        # encode_ordinary = Meta's encode(allowed_special=set(), disallowed_special=()): specials are text
        if len(text) <= _MAX_NO_WHITESPACES_CHARS:  # nothing to cut: skip the per-character scan
            return self._encoding.encode_ordinary(text)
        return [i for piece in _meta_long_text_pieces(text) for i in self._encoding.encode_ordinary(piece)]

    def decode(self, ids: Sequence[int]) -> str:
        specials = range(self.n_ranks, self.vocab_size)
        return self._encoding.decode([int(i) for i in ids if int(i) not in specials])


def _meta_long_text_pieces(text: str) -> Iterator[str]:
    """Meta's cut: 400k-character windows, and no run of (non-)whitespace longer than 25k characters."""
    for start in range(0, len(text), _TIKTOKEN_MAX_ENCODE_CHARS):
        window = text[start : start + _TIKTOKEN_MAX_ENCODE_CHARS]
        run_length, run_is_space, cut = 0, window[0].isspace(), 0
        for i, char in enumerate(window):
            if char.isspace() != run_is_space:
                run_length, run_is_space = 1, not run_is_space
                continue
            run_length += 1
            if run_length > _MAX_NO_WHITESPACES_CHARS:
                yield window[cut:i]
                cut, run_length = i, 1
        yield window[cut:]


def read_tiktoken_ranks(path: str | pathlib.Path) -> dict[bytes, int]:
    """`tiktoken.load.load_tiktoken_bpe`'s format ("<base64 token> <rank>" lines), read here because
    that function caches files by path name under /tmp: a file replaced at the same path reads stale."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(_read_bytes(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise DataError(f"{path}:{number}: not a '<base64 token> <rank>' line of a tiktoken file") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise DataError(f"{path}: tiktoken ranks are not 0..{len(ranks) - 1}, each once (duplicate or missing ranks)")
    missing = sum(bytes([b]) not in ranks for b in range(256))
    if missing:  # tiktoken panics on text it cannot reduce to single bytes
        raise DataError(f"{path}: {missing} of the 256 single bytes have no rank; not a byte-level BPE file")
    return ranks


class SentencePieceTokenizer(Tokenizer):
    """Llama 2 / Mistral `tokenizer.model` or `tokenizer.model.v3`; bos/eos/pad ids from the model."""

    def __init__(self, path: str | pathlib.Path):
        self.name, self.path = "sentencepiece", str(path)
        self._model = sentencepiece.SentencePieceProcessor()
        try:
            self._model.LoadFromSerializedProto(_read_bytes(path))
        except RuntimeError:
            raise DataError(f"{path}: not a readable sentencepiece model (truncated or corrupt protobuf)") from None
        self.bos_id, self.eos_id = self._model.bos_id(), self._model.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise DataError(f"{path}: sentencepiece model without a bos or eos piece")
        self.pad_id = self._model.pad_id() if self._model.pad_id() >= 0 else None
        self.vocab_size = self._model.vocab_size()

    def _encode(self, text: str) -> list[int]:
        return self._model.encode(text)  # control pieces (<s>, [INST], ...) are never matched in text

    def decode(self, ids: Sequence[int]) -> str:
        return self._model.decode([int(i) for i in ids])  # control pieces decode to nothing


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` (needs the optional `tokenizers` package). bos/eos/pad come
    from the arguments, else tokenizer_config.json beside the file, else well-known added tokens.
    A model without BOS gets bos_id None: tokenizer_config.json says "bos_token": null (Qwen), or
    no begin token is known but an end token is (OLMo's bare tokenizer.json)."""

    def __init__(self, path: str | pathlib.Path, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None):
        self.name, self.path = "huggingface tokenizer.json", str(path)
        try:
            import tokenizers
        except ImportError:
            raise DataError(f"{path}: reading a tokenizer.json needs `pip install tokenizers`") from None
        try:
            self._tokenizer = tokenizers.Tokenizer.from_str(_read_bytes(path).decode("utf-8"))
        except Exception as e:  # noqa: BLE001 (the Rust parser raises plain Exception)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path}: not a readable Hugging Face tokenizer.json ({reason})") from None
        self._tokenizer.encode_special_tokens = True  # special-token strings in text stay text
        config = _read_json_if_present(pathlib.Path(path).with_name("tokenizer_config.json"))
        added = [t.content for t in self._tokenizer.get_added_tokens_decoder().values()]
        eos_token = eos_token or _token_content(config.get("eos_token"))
        self.bos_id = self._bos_id(bos_token, config, eos_token, added)
        self.eos_id = self._token_id(eos_token, "eos", added)
        pad_token = pad_token or _token_content(config.get("pad_token"))
        self.pad_id = self._tokenizer.token_to_id(pad_token) if pad_token else None
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)

    def _bos_id(self, bos_token: str | None, config: dict, eos_token: str | None, added: list[str]) -> int | None:
        if bos_token is None and "bos_token" in config and config["bos_token"] is None:
            return None  # the model's own config: no BOS
        token = bos_token or _token_content(config.get("bos_token"))
        token = token or next((t for t in _KNOWN_HF_SPECIALS["bos"] if t in added), None)
        if token is None and (eos_token or any(t in added for t in _KNOWN_HF_SPECIALS["eos"])):
            return None  # an end token and no begin token: a model that reads no BOS
        return self._token_id(token, "bos", added)

    def _token_id(self, token: str | None, role: str, added: list[str]) -> int:
        known = _KNOWN_HF_SPECIALS[role]
        token = token or next((t for t in known if t in added), None)
        token_id = self._tokenizer.token_to_id(token) if token else None
        if token_id is None:
            looked_for = token or "none of " + ", ".join(known)
            raise DataError(f"{self.path}: no {role} token found ({looked_for}); pass {role}_token= to HFTokenizer")
        return token_id

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._tokenizer.encode_special_tokens = True  # the tokenizers library does not pickle this flag

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(path: str | pathlib.Path) -> Tokenizer:
    """The tokenizer in a file or folder, its format read from the file's content."""
    path = pathlib.Path(path)
    if path.is_dir():
        file = next((path / name for name in TOKENIZER_FILES if (path / name).is_file()), None)
        if file is None:
            raise DataError(f"{path}: no tokenizer file in this folder (looked for {', '.join(TOKENIZER_FILES)})")
        path = file
    elif not path.is_file():
        raise DataError(f"{path}: no such tokenizer file or folder")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise DataError(f"{path}: empty tokenizer file")
    if head.lstrip().startswith(b"{"):
        return HFTokenizer(path)
    if _TIKTOKEN_LINE.fullmatch(head.split(b"\n", 1)[0]):
        return Llama3Tokenizer(path)
    if head[0] == 0x0A:  # protobuf field 1 (the pieces), length-delimited: how sentencepiece models start
        return SentencePieceTokenizer(path)
    raise DataError(f"{path}: unknown tokenizer format (not tiktoken ranks, a sentencepiece model or tokenizer.json)")


def retokenize(ids: Sequence[int], source: Tokenizer, target: Tokenizer) -> list[int]:
    """`target`'s ids for the text held as `source`'s ids: decode, then encode without bos/eos, as the
    reference does when the encoder's and decoder's tokenizers differ (control tokens are dropped)."""
    return target.encode(source.decode(ids))


def _read_bytes(path: str | pathlib.Path) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read tokenizer file ({e.strerror or e})") from None


def _read_json_if_present(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable tokenizer_config.json ({e})") from None
    return config if isinstance(config, dict) else {}


def _token_content(token: str | dict | None) -> str | None:
    """tokenizer_config.json writes a token as a string or as {"content": ..., ...}."""
    return token.get("content") if isinstance(token, dict) else token
