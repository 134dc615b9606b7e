"""Tiny tokenizers built on the fly from a generated corpus (no network, no downloaded files), and a
plain-Python byte-level BPE encoder to check tiktoken's output against."""

from __future__ import annotations

import base64
import collections
import io
import itertools
import json
import random

import regex

WORDS = ("the", "compressed", "context", "encoder", "decoder", "reads", "vectors", "text", "token", "pooling",
         "question", "answer", "document", "café", "naïve", "über", "señor", "élève", "Zürich", "data", "model")
EXTRAS = ("I'm", "don't", "we'll", "it's", "they've", "1234567", "42", "3.14", "🙂", "🚀", "—",
          "\n", "\n\n", "  ")


def corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Generated sentences: words, accents, contractions, numbers, emoji and whitespace runs."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        parts = [rng.choice(WORDS) if rng.random() < 0.8 else rng.choice(EXTRAS) for _ in range(rng.randint(4, 14))]
        lines.append(" ".join(parts).capitalize() + rng.choice(".?!"))
    return lines


def train_sentencepiece(lines: list[str], vocab_size: int = 400) -> bytes:
    """A Llama 2-style BPE model (byte fallback, digits split, text kept as is), serialized."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    return model.getvalue()


def train_byte_bpe_ranks(lines: list[str], pattern: str, n_merges: int = 80) -> dict[bytes, int]:
    """tiktoken-style ranks: the 256 single bytes, then merges learnt by plain BPE on pattern pieces."""
    ranks = {bytes([b]): b for b in range(256)}
    words = collections.Counter(piece.encode() for line in lines for piece in regex.findall(pattern, line))
    splits = {word: [bytes([b]) for b in word] for word in words}
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, parts in splits.items():
            for pair in itertools.pairwise(parts):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))  # ties broken deterministically
        ranks[best[0] + best[1]] = len(ranks)
        for word, parts in splits.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            splits[word] = merged
    return ranks


def tiktoken_file_text(ranks: dict[bytes, int]) -> str:
    return "".join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items())


def reference_bpe_encode(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """Byte-level BPE as tiktoken defines it: split by pattern, then merge the lowest-ranked pair first."""
    ids = []
    for piece in regex.findall(pattern, text):
        parts = [bytes([b]) for b in piece.encode()]
        while len(parts) > 1:
            candidates = [(ranks[a + b], i) for i, (a, b) in enumerate(itertools.pairwise(parts)) if a + b in ranks]
            if not candidates:
                break
            _, i = min(candidates)  # lowest rank, leftmost on ties
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids += [ranks[p] for p in parts]
    return ids


def train_hf_tokenizer_json(lines: list[str], vocab_size: int = 400,
                            special_tokens: tuple[str, ...] = ("<s>", "</s>", "<pad>")) -> str:
    """A byte-level BPE tokenizer.json with `special_tokens` (<s>, </s> and <pad>; Qwen's are
    <|endoftext|>, <|im_start|>, <|im_end|>) as special added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer.to_str()


def tokenizer_config_json(bos: str, eos: str, pad: str | None) -> str:
    return json.dumps({"bos_token": bos, "eos_token": {"content": eos, "special": True}, "pad_token": pad})
