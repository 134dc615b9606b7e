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

With data.chat_template (an instruct decoder, Llama 2 Chat), either layout's windows are laid out
in the reference's chat template (arc_jax.prompts.chat, RECONSTRUCTION / CONTINUATION), the
document read without BOS / EOS as the reference reads it for an instruct decoder. Fine-tuning
(few_shot) and long context build their prompts with arc_jax.prompts too.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from arc_jax import prompts

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
    return tuple([encoder_tok.bos_id] * (bos and encoder_tok.bos_id is not None) + text_ids + [encoder_tok.eos_id] * eos)


def layout_sample(task: str, pieces: Sequence[prompts.Piece], contexts: Sequence[tuple[int, ...]],
                  decoder_tok: Tokenizer, special: Special) -> Sample:
    """The Sample of a prompt layout (arc_jax.prompts): its text runs tokenised as the reference
    tokenises them (BOS first), `contexts[i]` (encoder ids) in place of its i-th block."""
    tokens, flags, insertions, since = [], [], [], 0
    for run in prompts.encode(pieces, decoder_tok):
        if isinstance(run, prompts.Block):
            insertions.append(since)
            since = 0
        else:
            tokens += run[0]
            flags += run[1]
            since += len(run[0])
    if len(insertions) != len(contexts):
        raise ValueError(f"the layout has {len(insertions)} block(s) for {len(contexts)} context(s)")
    return Sample(task, tuple(contexts), tuple(tokens[:-1]), tuple(tokens[1:]), tuple(flags[1:]), tuple(insertions),
                  special)


def chat_sample(task: str, context: tuple[int, ...], target: Sequence[int], decoder_tok: Tokenizer) -> Sample:
    """A pretraining window in the Llama 2 Chat layout (prompts.chat with the reference's
    RECONSTRUCTION / CONTINUATION instructions): the target text (decoder ids, decoded) after
    " [/INST] " + the instruction's suffix, with loss, then EOS."""
    instruction, special = (prompts.RECONSTRUCTION, "rec") if task == "reconstruction" else (prompts.CONTINUATION, "cont")
    pieces = prompts.chat(instruction, [prompts.Block("")], target=decoder_tok.decode(list(target)))
    return layout_sample(task, pieces, [context], decoder_tok, special)


def reconstruction(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                   max_len: int = 256, chat: bool = False, encoder_bos_eos: bool = False) -> Sample:
    """arc_jax layout: compress a random span of <= max_len decoder tokens; the decoder, after
    [C, <Rec>], reproduces it. With `chat`, the Llama 2 Chat layout (chat_sample).
    `encoder_bos_eos`: the encoder reads BOS when the span starts the text and
    EOS when it ends it."""
    tokens = decoder_tok.encode(text)
    if not tokens:
        raise SkipRecord("empty text")
    start = int(rng.integers(0, max(1, len(tokens) - max_len + 1)))
    span = tokens[start: start + max_len]
    context = _compress(span, decoder_tok, encoder_tok, max_len, bos=encoder_bos_eos and start == 0,
                        eos=encoder_bos_eos and start + len(span) == len(tokens))
    if chat:
        return chat_sample("reconstruction", context, span, decoder_tok)
    x, y, mask = _stream([(span, True)], decoder_tok.bos_id)
    return Sample("reconstruction", (context,), tuple(x), tuple(y), tuple(mask), (0,), "rec")


def continuation(text: str, rng: np.random.Generator, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                 max_len: int = 256, chat: bool = False, encoder_bos_eos: bool = False) -> Sample:
    """arc_jax layout: plain prefix (<= max_len), compressed middle (<= max_len), continuation
    (<= max_len) with the loss on the continuation after its first token, which the decoder reads
    right after the block (nothing is predicted before the block). Short texts are split: half
    compressed, the rest continued, the prefix taking what a long text leaves before the middle.
    With `chat`, the Llama 2 Chat layout without prefix (chat_sample). `encoder_bos_eos`: BOS in
    the encoder when the middle starts the text."""
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
    context = _compress(middle, decoder_tok, encoder_tok, max_len, bos=encoder_bos_eos and start + prefix_len == 0)
    if chat:  # the chat layout has no plain prefix (the reference's has none without interleave)
        return chat_sample("continuation", context, cont, decoder_tok)
    # cont[0] is the block's first reader, not a target of the slot before the block
    pieces = [(prefix, False), (cont[:1], False), (cont[1:], True)]
    x, y, mask = _stream(pieces, decoder_tok.bos_id)
    insert_at = len(prefix) + (decoder_tok.bos_id is not None)
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


def document_tokens(text: str, decoder_tok: Tokenizer, chat: bool = False) -> list[int]:
    """A pretraining document as the reference tokenises it: BOS + text + EOS (tokenize.py:encode);
    for an instruct (chat) decoder the text alone (bos=eos=False with instruct_decoder)."""
    ids = decoder_tok.encode(text)
    if not ids:
        raise SkipRecord("empty text")
    if chat:
        return ids
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
                             encoder_bos_eos: bool = True, chat: bool = False) -> list[Sample]:
    """Every reconstruction window of a document, as sequence_iterator_reconstruction cuts it:
    [C][<Rec>] + x[c:c+n], targets y[c:c+n] (all with loss), the encoder reading tokens[c:c+n]
    (a window whose context has <= 1 token is dropped, as the reference's data loader drops it).
    With `chat`, each window x[c:c+n] is the target of the chat layout (chat_sample)."""
    tokens = document_tokens(text, decoder_tok, chat)
    x, y = tokens[:-1], tokens[1:]
    samples = []
    for c in range(0, len(x), max_len):
        context = _encoder_input(tokens[c: c + max_len], decoder_tok, encoder_tok, encoder_bos_eos)
        n = len(x[c: c + max_len])
        if len(context) > 1 and chat:
            samples.append(chat_sample("reconstruction", context, x[c: c + n], decoder_tok))
        elif len(context) > 1:
            samples.append(Sample("reconstruction", (context,), tuple(x[c: c + n]), tuple(y[c: c + n]), (True,) * n,
                                  (0,), "rec"))
    if not samples:
        raise SkipRecord("no window with more than one token to compress")
    return samples


def reference_continuation(text: str, decoder_tok: Tokenizer, encoder_tok: Tokenizer, max_len: int = 256,
                           encoder_bos_eos: bool = True, same_tokenizer: bool = False, chat: bool = False
                           ) -> list[Sample]:
    """Every continuation chunk of a document, as sequence_iterator_continuation (interleave unset)
    cuts it: chunks of r <= 2 * max_len x tokens, h = r // 2 compressed, the next h read after
    [C][<Cont>] with targets shifted by one. A remainder under MIN_CONTINUATION_CHUNK tokens is
    dropped; a chunk compressing one repeated token makes no sample (the reference masks its loss).
    With `chat`, the continued half is the target of the chat layout (chat_sample)."""
    tokens = document_tokens(text, decoder_tok, chat)
    x, y = tokens[:-1], tokens[1:]
    samples, c = [], 0
    while len(x) - c >= MIN_CONTINUATION_CHUNK:
        h = min(2 * max_len, len(x) - c) // 2
        middle, c = x[c: c + h], c + h
        context = _encoder_input(middle, decoder_tok, encoder_tok, encoder_bos_eos, same_tokenizer)
        if len(set(middle)) > 1 and len(context) > 1 and chat:
            samples.append(chat_sample("continuation", context, x[c: c + h], decoder_tok))
        elif len(set(middle)) > 1 and len(context) > 1:
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
    that task, "arc_jax" one random window; `chat` lays each out in the Llama 2 Chat template.
    `same_tokenizer`: the encoder reads a continuation's decoder ids as they are (the reference does
    so when decoder and encoder are both Llama)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    if layout == "arc_jax":
        return [pretraining(text, rng, decoder_tok, encoder_tok, max_len, continuation_prob, chat, encoder_bos_eos)]
    if rng.random() < continuation_prob:
        return reference_continuation(text, decoder_tok, encoder_tok, max_len, encoder_bos_eos, same_tokenizer, chat)
    return reference_reconstruction(text, decoder_tok, encoder_tok, max_len, encoder_bos_eos, chat)


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
             max_passages: int = 1, max_passage_len: int = 256, answer_layout: str = "reference",
             layout: str = "reference") -> Sample:
    """Interleaved few-shot QA as the reference fine-tunes (prompts.few_shot with `training`):
    every example's document compressed, loss on the last answer and EOS.

    Each example keeps n ~ U{1..max_passages} of its passages (fewer when it has fewer; the
    reference's random.randint before slicing), each cut to max_passage_len encoder tokens (the
    reference's 5 x seq_len). The evaluated example's document is their token lists concatenated;
    an in-context example's is their texts stripped and joined by " ", re-encoded
    (sequence_iterators.py: the last document is tokens, the shots are stored text). Passages are
    encoded with the encoder's tokenizer directly (tokenize.py). Answers are drawn from each
    example's list. `answer_layout`: prompts.few_shot's ("reference" or "eval").

    `layout` "arc_jax": this project's earlier samples (prompts.few_shot_arc_jax; each document
    1..min(max_passages, passages) passages joined by newlines, read through the decoder's tokenizer
    and cut to max_passage_len encoder tokens as a whole)."""
    if not examples:
        raise ValueError("few_shot needs at least one example")
    if layout == "arc_jax":
        return _few_shot_arc_jax(examples, rng, decoder_tok, encoder_tok, max_passages, max_passage_len)
    qas, contexts = [], []
    for i, ex in enumerate(examples):
        n = min(int(rng.integers(1, max_passages + 1)), len(ex.passages))
        kept = [encoder_tok.encode(p)[:max_passage_len] for p in ex.passages[:n]]
        if i == len(examples) - 1:
            ids = [t for k in kept for t in k]
        else:
            ids = encoder_tok.encode(" ".join(encoder_tok.decode(k).strip() for k in kept))
        if not ids:
            raise SkipRecord("the document is empty after tokenisation")
        contexts.append(tuple(ids))
        answer = ex.answers[int(rng.integers(0, len(ex.answers)))]
        qas.append(prompts.QA(ex.question, answer, prompts.Block(encoder_tok.decode(ids), i)))
    pieces = prompts.few_shot(qas[:-1], qas[-1], training=True, answer_layout=answer_layout)
    return layout_sample("fewshot", pieces, contexts, decoder_tok, "cont")


def _few_shot_arc_jax(examples: Sequence[QARecord], rng: np.random.Generator, decoder_tok: Tokenizer,
                      encoder_tok: Tokenizer, max_passages: int, max_len: int) -> Sample:
    qas, contexts = [], []
    for i, ex in enumerate(examples):
        n = int(rng.integers(1, min(max_passages, len(ex.passages)) + 1))
        document = "\n".join(ex.passages[:n])
        contexts.append(_compress(decoder_tok.encode(document), decoder_tok, encoder_tok, max_len))
        answer = ex.answers[int(rng.integers(0, len(ex.answers)))]
        qas.append(prompts.QA(ex.question, answer, prompts.Block(document, i)))
    pieces = prompts.few_shot(qas[:-1], qas[-1], training=True, layout="arc_jax")
    return layout_sample("fewshot", pieces, contexts, decoder_tok, "cont")


def long_context(text: str, instruction: str, answer: str, decoder_tok: Tokenizer, encoder_tok: Tokenizer,
                 chunk_len: int = 1024, max_chunks: int = 32) -> Sample:
    """Llama 2 Chat long-context: the document cut into <= max_chunks chunks of chunk_len encoder
    tokens, each compressed on its own, all after the chat head, then the instruction and the
    answer (prompts.chat; the record's instruction may be the reference's
    "prefix||instruction||suffix"), loss on the answer and EOS, no special vectors. A document
    longer than max_chunks * chunk_len is cut there, as in the paper's setting."""
    ids = encoder_tok.encode(text)
    if not ids:
        raise SkipRecord("empty document")
    try:
        parsed = prompts.ChatInstruction.parse(instruction)
    except ValueError as e:
        raise SkipRecord(str(e)) from None
    chunks = [tuple(ids[i: i + chunk_len]) for i in range(0, min(len(ids), chunk_len * max_chunks), chunk_len)]
    pieces = prompts.chat(parsed, [prompts.Block("", k) for k in range(len(chunks))], target=answer)
    return layout_sample("long_context", pieces, chunks, decoder_tok, None)
