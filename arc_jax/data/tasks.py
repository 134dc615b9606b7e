"""ARC training tasks: pure functions from records (+ a numpy RNG) to token-level samples.

A `Sample` follows the reference's stream convention. The decoder reads a text stream `x`
(decoder-tokenizer ids) with next-token targets `y` and a loss mask, both aligned with `x`, and
compressed contexts spliced in. `insertions[i]` is the number of `x` tokens between the previous
insertion (or the start) and context i. Each context holds encoder-tokenizer ids, made as the
reference makes them: spans are chosen in decoder tokens, decoded to text, and re-encoded with
the encoder's tokenizer. After each context the decoder reads one special vector: <Rec> for
reconstruction, <Cont> otherwise, none for the long-context (Llama 2 Chat) variant.

Pretraining has two layouts (config.data.layout; notes/reference_recipe.md 2.2-2.6):

- "reference", what kyutai-labs/ARC-Encoder's released pretraining ran
  (embed_llm/data/sequence_iterators.py): the document is BOS + text + EOS, x = tokens[:-1],
  y = tokens[1:], cut into consecutive windows that are all used. Reconstruction: windows of
  max_len, [C][<Rec>] + x-window (BOS only in the first), targets shifted by one (the EOS is the
  last window's last target); the encoder reads the window's tokens tokens[c:c+n] (BOS / EOS
  flags when they hold them). Continuation: chunks of 2 * max_len halved, [C][<Cont>] + second
  half, nothing before the block, the first continued token input only.
- "arc_jax", this project's earlier layout: one random window per record; reconstruction
  [C][<Rec>][BOS] + span (every span token a target), continuation [BOS] + a random 0..max_len
  prefix + [C][<Cont>] + continuation, whose first token is input only (it used to be predicted,
  with loss, at the slot before the block: the decoder had not seen the compressed text yet).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

if TYPE_CHECKING:
    from arc_jax.data.tokenizers import Tokenizer

Special = Literal["rec", "cont"] | None


class SkipRecord(ValueError):
    """The record cannot make a sample (too short, empty answer, ...): counted as a bad record."""


@dataclasses.dataclass(frozen=True)
class Sample:
    task: str
    contexts: tuple[tuple[int, ...], ...]
    x: tuple[int, ...]
    y: tuple[int, ...]
    loss_mask: tuple[bool, ...]
    insertions: tuple[int, ...]
    special: Special

    def __post_init__(self):
        if not len(self.x) == len(self.y) == len(self.loss_mask):
            raise ValueError(f"x, y and loss_mask differ in length: {len(self.x)}, {len(self.y)}, {len(self.loss_mask)}")
        if len(self.insertions) != len(self.contexts) or sum(self.insertions) > len(self.x):
            raise ValueError(f"insertions {self.insertions} do not fit {len(self.contexts)} contexts in {len(self.x)} tokens")
        if any(not c for c in self.contexts):
            raise ValueError("a context is empty")

    @property
    def decoder_length(self) -> int:
        """Slots in the decoder: text tokens, compressed vectors not included (they depend on pooling)."""
        return len(self.x)


def _stream(pieces: Sequence[tuple[Sequence[int], bool]], bos: int | None) -> tuple[list[int], list[int], list[bool]]:
    """(x, y, loss_mask) of text pieces (ids, carries_loss): the loss flag belongs to the target."""
    tokens, flags = ([bos], [False]) if bos is not None else ([], [])
    for ids, loss in pieces:
        tokens += list(ids)
        flags += [loss] * len(ids)
    return tokens[:-1], tokens[1:], flags[1:]


def _compress(ids: Sequence[int], decoder_tok: Tokenizer, encoder_tok: Tokenizer, max_len: int,
              bos: bool = False, eos: bool = False) -> tuple[int, ...]:
    text_ids = encoder_tok.encode(decoder_tok.decode(list(ids)))[:max_len]
    if not text_ids:
        raise SkipRecord("the text to compress is empty after re-tokenisation")
    return tuple([encoder_tok.bos_id] * bos + text_ids + [encoder_tok.eos_id] * eos)


# Instructions of the Llama 2 Chat pretraining variants (our wording; the paper gives none).
RECONSTRUCTION_INSTRUCTION = "Repeat the text above exactly."
CONTINUATION_INSTRUCTION = "Continue the text above."


def _chat_pieces(decoder_tok: Tokenizer, before: Sequence[int], instruction: str, target: Sequence[int]):
    """Text pieces of the Llama 2 Chat template "[INST] Text:\\n\\n{before}<C> {instruction} [/INST]{target}"
    (loss on the target) and the insertion offset of <C>, counted in x tokens."""
    head = decoder_tok.encode("[INST] Text:\n\n") + list(before)
    tail = decoder_tok.encode(f" {instruction} [/INST]")
    pieces = [(head, False), (tail, False), (list(target), True)]
    return pieces, len(head) + (decoder_tok.bos_id is not None)


def reconstruction(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                   max_len: int = 256, chat: bool = False, encoder_bos_eos: bool = False) -> Sample:
    """arc_jax layout: compress a random span of <= max_len decoder tokens; the decoder, after
    [C, <Rec>], reproduces it. With `chat`, the Llama 2 Chat variant: the span is asked for inside
    [INST] ... [/INST]. `encoder_bos_eos`: the encoder reads BOS when the span starts the text and
    EOS when it ends it."""
    tokens = decoder_tok.encode(text)
    if not tokens:
        raise SkipRecord("empty text")
    start = int(rng.integers(0, max(1, len(tokens) - max_len + 1)))
    span = tokens[start: start + max_len]
    pieces, insert_at = ([(span, True)], 0) if not chat else _chat_pieces(decoder_tok, [], RECONSTRUCTION_INSTRUCTION,
                                                                            span)
    x, y, mask = _stream(pieces, decoder_tok.bos_id)
    context = _compress(span, decoder_tok, encoder_tok, max_len, bos=encoder_bos_eos and start == 0,
                        eos=encoder_bos_eos and start + len(span) == len(tokens))
    return Sample("reconstruction", (context,), tuple(x), tuple(y), tuple(mask), (insert_at,), "rec")


def continuation(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                 max_len: int = 256, chat: bool = False, encoder_bos_eos: bool = False) -> Sample:
    """arc_jax layout: plain prefix (<= max_len), compressed middle (<= max_len), continuation
    (<= max_len) with the loss on the continuation after its first token, which the decoder reads
    right after the block (nothing is predicted before the block). Short texts are split: half
    compressed, the rest continued, the prefix taking what a long text leaves before the middle.
    With `chat`, the Llama 2 Chat variant: "[INST] Text:\\n\\n{prefix}<C> Continue the text above.
    [/INST]{continuation}". `encoder_bos_eos`: BOS in the encoder when the middle starts the text."""
    tokens = decoder_tok.encode(text)
    if len(tokens) < 4:
        raise SkipRecord(f"text of {len(tokens)} token(s) is too short for continuation (needs 4)")
    prefix_len = int(rng.integers(0, max_len + 1))
    if len(tokens) >= prefix_len + 2 * max_len:
        start = int(rng.integers(0, len(tokens) - prefix_len - 2 * max_len + 1))
        prefix = tokens[start: start + prefix_len]
        middle = tokens[start + prefix_len: start + prefix_len + max_len]
        cont = tokens[start + prefix_len + max_len: start + prefix_len + 2 * max_len]
    else:
        start, prefix_len = 0, min(prefix_len, max(0, len(tokens) - 2 * max_len), len(tokens) // 3)
        rest = tokens[prefix_len:]
        half = min(max_len, (len(rest) + 1) // 2)
        prefix, middle, cont = tokens[:prefix_len], rest[:half], rest[half: half + max_len]
    if chat:
        pieces, insert_at = _chat_pieces(decoder_tok, prefix, CONTINUATION_INSTRUCTION, cont)
    else:  # cont[0] is the block's first reader, not a target of the slot before the block
        pieces = [(prefix, False), (cont[:1], False), (cont[1:], True)]
        insert_at = len(prefix) + (decoder_tok.bos_id is not None)
    x, y, mask = _stream(pieces, decoder_tok.bos_id)
    context = _compress(middle, decoder_tok, encoder_tok, max_len, bos=encoder_bos_eos and start + prefix_len == 0)
    return Sample("continuation", (context,), tuple(x), tuple(y), tuple(mask), (insert_at,), "cont")


def pretraining(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                max_len: int = 256, continuation_prob: float = 0.8, chat: bool = False,
                encoder_bos_eos: bool = False) -> Sample:
    """arc_jax layout's mixture: continuation with probability continuation_prob, else reconstruction."""
    task = continuation if rng.random() < continuation_prob else reconstruction
    return task(text, rng, decoder_tok, encoder_tok, max_len, chat, encoder_bos_eos)


# The reference's pretraining layout (notes/reference_recipe.md 2.3, 2.4, 2.6).
LAYOUTS = ("reference", "arc_jax")
MIN_CONTINUATION_CHUNK = 6  # sequence_iterator_continuation drops a document's remainder below this


def document_tokens(text: str, decoder_tok: Tokenizer) -> list[int]:
    """A pretraining document as the reference tokenises it: BOS + text + EOS (tokenize.py:encode)."""
    ids = decoder_tok.encode(text)
    if not ids:
        raise SkipRecord("empty text")
    return [t for t in (decoder_tok.bos_id,) if t is not None] + ids + [decoder_tok.eos_id]


def _encoder_input(ids: Sequence[int], decoder_tok: Tokenizer, encoder_tok: Tokenizer, bos_eos: bool,
                   same_tokenizer: bool = False) -> tuple[int, ...]:
    """What the reference's encoder reads for decoder ids `ids`: their text re-encoded, with BOS / EOS
    when `ids` hold the document's (and `bos_eos`); with `same_tokenizer`, the ids themselves."""
    controls = (decoder_tok.bos_id, decoder_tok.eos_id)
    if same_tokenizer:
        return tuple(i for i in ids if bos_eos or i not in controls)
    bos, eos = (bos_eos and t in ids for t in controls)
    return tuple(encoder_tok.encode(decoder_tok.decode(list(ids)), bos=bos, eos=eos))


def reference_reconstruction(text: str, decoder_tok: Tokenizer, encoder_tok: Tokenizer, max_len: int = 256,
                             encoder_bos_eos: bool = True) -> list[Sample]:
    """Every reconstruction window of a document, as sequence_iterator_reconstruction cuts it:
    [C][<Rec>] + x[c:c+n], targets y[c:c+n] (all with loss), the encoder reading tokens[c:c+n]
    (a window whose context has <= 1 token is dropped, as the reference's data loader drops it)."""
    tokens = document_tokens(text, decoder_tok)
    x, y = tokens[:-1], tokens[1:]
    samples = []
    for c in range(0, len(x), max_len):
        context = _encoder_input(tokens[c: c + max_len], decoder_tok, encoder_tok, encoder_bos_eos)
        n = len(x[c: c + max_len])
        if len(context) > 1:
            samples.append(Sample("reconstruction", (context,), tuple(x[c: c + n]), tuple(y[c: c + n]), (True,) * n,
                                  (0,), "rec"))
    if not samples:
        raise SkipRecord("no window with more than one token to compress")
    return samples


def reference_continuation(text: str, decoder_tok: Tokenizer, encoder_tok: Tokenizer, max_len: int = 256,
                           encoder_bos_eos: bool = True, same_tokenizer: bool = False) -> list[Sample]:
    """Every continuation chunk of a document, as sequence_iterator_continuation (interleave unset)
    cuts it: chunks of r <= 2 * max_len x tokens, h = r // 2 compressed, the next h read after
    [C][<Cont>] with targets shifted by one. A remainder under MIN_CONTINUATION_CHUNK tokens is
    dropped; a chunk compressing one repeated token makes no sample (the reference masks its loss)."""
    tokens = document_tokens(text, decoder_tok)
    x, y = tokens[:-1], tokens[1:]
    samples, c = [], 0
    while len(x) - c >= MIN_CONTINUATION_CHUNK:
        h = min(2 * max_len, len(x) - c) // 2
        middle, c = x[c: c + h], c + h
        context = _encoder_input(middle, decoder_tok, encoder_tok, encoder_bos_eos, same_tokenizer)
        if len(set(middle)) > 1 and len(context) > 1:
            samples.append(Sample("continuation", (context,), tuple(x[c: c + h]), tuple(y[c: c + h]), (True,) * h,
                                  (0,), "cont"))
        c += h
    if not samples:
        raise SkipRecord(f"text of {len(x)} token(s) makes no continuation chunk (needs {MIN_CONTINUATION_CHUNK})")
    return samples


def pretraining_samples(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer, *,
                        max_len: int = 256, continuation_prob: float = 0.8, chat: bool = False,
                        layout: str = "reference", encoder_bos_eos: bool = True,
                        same_tokenizer: bool = False) -> list[Sample]:
    """One pretraining record's samples. The task is drawn once per record (the reference draws it
    per document, dataset.py:sequence_iterator): "reference" gives all the document's windows of
    that task, "arc_jax" (and the Llama 2 Chat variants, `chat`) one random window.
    `same_tokenizer`: the encoder reads a continuation's decoder ids as they are (the reference does
    so when decoder and encoder are both Llama)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    if chat or layout == "arc_jax":
        return [pretraining(text, rng, decoder_tok, encoder_tok, max_len, continuation_prob, chat, encoder_bos_eos)]
    if rng.random() < continuation_prob:
        return reference_continuation(text, decoder_tok, encoder_tok, max_len, encoder_bos_eos, same_tokenizer)
    return reference_reconstruction(text, decoder_tok, encoder_tok, max_len, encoder_bos_eos)


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclasses.dataclass(frozen=True)
class QARecord:
    """One fine-tuning record: a question, its answers, and its passages."""

    question: str
    answers: tuple[str, ...]
    passages: tuple[str, ...]

    @classmethod
    def from_json(cls, record: dict) -> QARecord:
        passages = record.get("passages", record.get("passage"))
        if passages is None:
            raise SkipRecord("no 'passage' or 'passages' field")
        answers = tuple(a for a in _as_list(record["answer"]) if a.strip())
        if not answers:
            raise SkipRecord("no non-empty answer")
        passages = tuple(p for p in _as_list(passages) if p.strip())
        if not passages:
            raise SkipRecord("no non-empty passage")
        return cls(record["question"], answers, passages)


def few_shot(examples: Sequence[QARecord], rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
             max_passages: int = 1, max_context_len: int = 256) -> Sample:
    """Interleaved few-shot QA: every example's document compressed, loss on the last answer only.

        Document: <C>\\nQuestion: q\\nAnswer: a\\n\\nDocument: <C>\\nQuestion: q\\nAnswer: a<eos>

    Each document is 1..max_passages of the example's passages joined by newlines, compressed
    jointly; each answer is drawn from the example's list."""
    if not examples:
        raise ValueError("few_shot needs at least one example")
    pieces, insertions, contexts = [], [], []
    since_insert = decoder_tok.bos_id is not None
    for i, ex in enumerate(examples):
        last = i == len(examples) - 1
        n = int(rng.integers(1, min(max_passages, len(ex.passages)) + 1))
        document = "\n".join(ex.passages[:n])
        contexts.append(_compress(decoder_tok.encode(document), decoder_tok, encoder_tok, max_context_len))
        lead = decoder_tok.encode("Document:" if i == 0 else "\n\nDocument:")
        pieces.append((lead, False))
        insertions.append(since_insert + len(lead))
        answer = ex.answers[int(rng.integers(0, len(ex.answers)))]
        question = decoder_tok.encode(f"\nQuestion: {ex.question}\nAnswer:")
        pieces.append((question, False))
        answer_ids = decoder_tok.encode(f" {answer}") + ([decoder_tok.eos_id] if last else [])
        pieces.append((answer_ids, last))
        since_insert = len(question) + len(answer_ids)
    x, y, mask = _stream(pieces, decoder_tok.bos_id)
    return Sample("fewshot", tuple(contexts), tuple(x), tuple(y), tuple(mask), tuple(insertions), "cont")


def long_context(text: str, instruction: str, answer: str, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                 chunk_len: int = 1024, max_chunks: int = 32) -> Sample:
    """Llama 2 Chat long-context: the document cut into <= max_chunks chunks of chunk_len encoder
    tokens, each compressed on its own, concatenated inside
    "[INST] Text:\\n\\n<C...C> {instruction} [/INST] {answer}", loss on the answer, no special vectors.
    A document longer than max_chunks * chunk_len is cut there, as in the paper's setting."""
    ids = encoder_tok.encode(text)
    if not ids:
        raise SkipRecord("empty document")
    chunks = tuple(tuple(ids[i: i + chunk_len]) for i in range(0, min(len(ids), chunk_len * max_chunks), chunk_len))
    answer_ids = decoder_tok.encode(f" {answer}") + [decoder_tok.eos_id]
    pieces, first = _chat_pieces(decoder_tok, [], instruction, answer_ids)
    x, y, mask = _stream(pieces, decoder_tok.bos_id)
    return Sample("long_context", chunks, tuple(x), tuple(y), tuple(mask), (first,) + (0,) * (len(chunks) - 1), None)
