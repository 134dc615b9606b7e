"""The evaluation harness behind `arc-jax eval`: few-shot QA, translation and summarisation
(the paper's 5-shot benchmarks, in the reference's jsonl fields), and Llama 2 Chat long-context QA,
each read four ways.

    pipe = arc_jax.ARCPipeline(encoder=enc, decoder=dec, decoder_index=0)
    evaluate(pipe, ["nq.jsonl:qa", "flores_es.jsonl:translation:Spanish"],
             modes=("closed_book", "open_book", "compressed"), out_dir="eval_out")

Prompts come from arc_jax.prompts (the one module of prompt layouts). Few-shot prompt (fixed shots
drawn once per benchmark with `seed`, held out of the evaluated records; a shot's answer is its
first one), as the reference evaluates (embed_llm/generation/utils.py create_prompt_prefix,
create_prompt):

    Document: <C>\\nQuestion: q\\nAnswer: a\\n\\nDocument: <C>\\nQuestion: q\\nAnswer:

Modes say what stands for each document <C> (the shots' ones included):
- closed_book: nothing; "Question: q\\nAnswer: a\\n\\nQuestion: q\\nAnswer:".
- open_book:   the document's text ("Document: text\\nQuestion: ..."), the prompt tokenised whole.
- compressed:  the document compressed by the ARC encoder (with <Cont> when the encoder has it),
  each run of text between two blocks tokenised alone, as the reference does ("Document: ", <C>,
  "\\nQuestion: q\\nAnswer: a\\n\\nDocument: ", <C>, ..., "\\nQuestion: q\\nAnswer:").
- truncated:   the document's text cut to as many decoder tokens as its compressed block has
  vectors (a baseline with the same prefill budget), tokenised as open_book.
Long context (zero-shot) cuts the document into <= 32 chunks of 1024 encoder tokens, each
compressed on its own. A file with a reference dataset template (NarrativeQA, Qasper, GovReport,
SummScreenFD, QMSum) is read in the reference protocol as the reference's long-context evaluation
reads it (prompts.long_context_*: its labels and query in the chat layout, <Cont> after each chunk,
the prompt cut to the decoder's window); otherwise with the chat layout tasks.long_context trains
with (prompts.chat: "[INST]" + the instruction's prefix, <C...C>, the instruction, " [/INST] " + its
suffix; no special vectors).

Every prompt starts with the decoder's BOS. Generation is greedy. The answer (PROTOCOLS): the text
before its first blank line (reference; long context: the whole generation), or before its first
newline (arc_jax), stripped; decoding stops at EOS or at a token that opens such a cut.

Metrics (metrics.py, in percent): QA EM and F1, translation BLEU, summarisation ROUGE-L, long
context F1 and ROUGE-L. Per benchmark and mode the results also hold n, the compression ratio (the
evaluated document's decoder tokens over the decoder slots it takes: compressed vectors with <Cont>,
or truncated tokens; mean over records) and the mean prefill length (decoder slots per prompt, BOS
and vectors included). Written to out_dir: results.json, results.md and predictions/*.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from arc_jax import prompts
from arc_jax.convert.atomic import write_file_atomic
from arc_jax.data.bad_records import DataError
from arc_jax.data.sources import field_problem, parse_record
from arc_jax.evaluation.metrics import (CONTEXT_METRICS, CORPUS_METRICS, REFERENCE_METRICS_BY_KIND, record_scores,
                                        score)
from arc_jax.inference.store import token_hash

MODES = ("closed_book", "open_book", "compressed", "truncated")
KINDS = ("qa", "translation", "summarization", "long_context")
METRICS_BY_KIND = {"qa": ("em", "f1"), "translation": ("bleu",), "summarization": ("rougeL",),
                   "long_context": ("f1", "rougeL")}
DEFAULT_MAX_NEW_TOKENS = {"qa": 32, "translation": 128, "summarization": 128, "long_context": 64}
METRIC_NAMES = {"em": "EM", "approx_em": "approx. EM", "xrag": "xRAG", "context_has_answer": "answer in context",
                "f1": "F1", "bleu": "BLEU", "rougeL": "ROUGE-L"}

TRANSLATION_QUESTION, SUMMARY_QUESTION = prompts.TRANSLATION_QUESTION, prompts.SUMMARY_QUESTION

# Field names accepted per role, first present wins (reference jsonl and common variants).
_DOCUMENT_FIELDS = {"qa": ("passages", "passage"), "translation": ("passage", "text", "source"),
                    "summarization": ("passage", "passages", "text", "article", "document"),
                    "long_context": ("passage", "passages", "text", "context", "document")}
_ANSWER_FIELDS = {"qa": ("answers", "answer"), "translation": ("answer", "answers", "translation", "target"),
                  "summarization": ("summary", "answer", "answers", "highlights"),
                  "long_context": ("answers", "answer")}
_QUESTION_FIELDS = {"qa": ("question",), "translation": (), "summarization": ("question", "instruction"),
                    "long_context": ("instruction", "question")}


# --- Benchmarks and their records ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One evaluation file: its kind, a name for the results, (translation) the target language
    when the records do not name it, and (long context) the reference's dataset template
    (prompts.LONG_CONTEXT_QUERY: NQA, Qspr, GvRp, SSFD, QMSum; by default from the file name)."""

    path: str
    kind: str = "qa"
    name: str = ""
    language: str | None = None
    template: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown benchmark kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not self.name:
            object.__setattr__(self, "name", Path(self.path).stem)
        if self.kind == "long_context" and self.template is None:
            stem = Path(self.path).stem.lower()
            found = [t for key, t in LONG_CONTEXT_FILE_NAMES.items() if key in stem]
            object.__setattr__(self, "template", found[0] if found else None)
        if self.template is not None and self.template not in prompts.LONG_CONTEXT_QUERY:
            raise ValueError(f"unknown long-context template {self.template!r}; known: "
                             f"{', '.join(prompts.LONG_CONTEXT_QUERY)}")


# File names that say which reference long-context template a file takes (data prepare's names).
LONG_CONTEXT_FILE_NAMES = {"narrativeqa": "NQA", "qasper": "Qspr", "govreport": "GvRp", "qmsum": "QMSum",
                           "summ_screen": "SSFD", "ssfd": "SSFD"}


def parse_benchmark(spec: str) -> Benchmark:
    """`FILE`, `FILE:KIND`, `FILE:translation:LANGUAGE` or `FILE:long_context:TEMPLATE` (the command
    line's --data)."""
    head, _, last = spec.rpartition(":")
    if head and last in KINDS:
        return Benchmark(head, last)
    path, _, kind = head.rpartition(":")
    if path and kind == "translation":
        return Benchmark(path, kind, f"{Path(path).stem}-{last}", language=last)
    if path and kind == "long_context":
        return Benchmark(path, kind, template=last)
    if head and not Path(spec).exists():
        raise ValueError(f"--data {spec!r}: unknown benchmark kind {last!r}; known: {', '.join(KINDS)} "
                         "(FILE, FILE:KIND or FILE:translation:LANGUAGE)")
    return Benchmark(spec)


@dataclasses.dataclass(frozen=True)
class Example:
    """One evaluation record: the question (or instruction), its reference answers, its document
    (None when the record has none: closed book only), and its 1-based line in the file."""

    question: str
    answers: tuple[str, ...]
    document: str | None
    line: int
    instruction: str | None = None  # long context: the record's instruction and question, apart
    query: str | None = None


def _texts(record: dict, names: Sequence[str], role: str, required: bool, types=(str, list)) -> list[str] | None:
    """The stripped strings of the first present field of `names`, or None; raises ValueError(reason)."""
    name = next((n for n in names if n in record), None)
    if name is None:
        if required:
            alternatives = " or ".join(f"'{n}'" for n in names)
            raise ValueError(f"missing field {alternatives} ({role})")
        return None
    if reason := field_problem(record, name, types):
        raise ValueError(reason)
    values = record[name]
    return [v.strip() for v in ([values] if isinstance(values, str) else values)]


def record_document(record: dict, names: Sequence[str], max_passages: int = 1, required: bool = True) -> str | None:
    """A record's document as the harness reads it (and `arc-jax index` indexes it, so that `eval
    --store` finds the same text): the first present field of `names`, a string or the first
    `max_passages` strings of a list, each stripped, joined by newlines. ValueError(reason)."""
    passages = _texts(record, names, "the document", required)
    return "\n".join(passages[:max_passages]) if passages else None


def example_from_record(record: dict, bench: Benchmark, line: int, need_document: bool,
                        max_passages: int = 1) -> Example:
    """An Example from one parsed record; ValueError(reason) when the record cannot make one."""
    kind = bench.kind
    answers = _texts(record, _ANSWER_FIELDS[kind], "the reference answers", True)
    document = record_document(record, _DOCUMENT_FIELDS[kind], max_passages, need_document)
    question = _texts(record, _QUESTION_FIELDS[kind], "the question", kind in ("qa", "long_context"), str)
    if kind == "translation":
        language = record.get("language", bench.language)
        if not isinstance(language, str) or not language.strip():
            raise ValueError("no target language: give the record a 'language' field or the benchmark one "
                             "(--data FILE:translation:LANGUAGE)")
        question = [TRANSLATION_QUESTION.format(language=language.strip())]
    elif kind == "summarization" and question is None:
        question = [SUMMARY_QUESTION]
    if kind == "long_context":  # both kept: the reference's templates read the instruction and the question
        instruction = _texts(record, ("instruction",), "the instruction", False, str)
        query = _texts(record, ("question",), "the question", False, str)
        return Example(question[0], tuple(answers), document, line, instruction and instruction[0], query and query[0])
    return Example(question[0], tuple(answers), document, line)


def load_examples(bench: Benchmark, need_document: bool = True, max_passages: int = 1) -> list[Example]:
    """Every record of a jsonl benchmark file. A bad record raises DataError naming path:line, as
    the training data pipeline reports them (sources.parse_record's reasons); so does an empty file."""
    path = Path(bench.path)
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    examples = []
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        record, reason = parse_record(raw.rstrip(b"\r"), {}, max_record_bytes=len(raw))  # books are long
        if reason is None:
            try:
                examples.append(example_from_record(record, bench, number, need_document, max_passages))
                continue
            except ValueError as e:
                reason = str(e)
        raise DataError(f"{path}:{number}: {reason} (an evaluation record must be valid: fix or remove it)")
    if not examples:
        raise DataError(f"{path}: empty file (no records)")
    return examples


def split_shots(n_examples: int, shots: int, seed: int, max_examples: int | None) -> tuple[list[int], list[int]]:
    """(shot indices, evaluated indices): `shots` records drawn once with `seed` serve as the fixed
    in-context examples and are never evaluated; the evaluated ones are up to `max_examples` of
    the rest, drawn with the same permutation, in file order."""
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if n_examples <= shots:
        raise DataError(f"{n_examples} record(s) but {shots} shot(s): need at least one record beyond the shots")
    order = np.random.default_rng(seed).permutation(n_examples).tolist()
    rest = order[shots:]
    if max_examples is not None:
        rest = rest[:max_examples]
    return order[:shots], sorted(rest)


# --- Prompt templates (arc_jax.prompts) ------------------------------------------------------------

Document = prompts.Block  # a document's place in a prompt; `key` is the example's index
Piece = prompts.Piece


def few_shot_template(shots: Sequence[tuple[int, Example]], target: tuple[int, Example],
                      with_documents: bool, shot_documents: bool | None = None, layout: str = "reference"
                      ) -> list[Piece]:
    """prompts.few_shot, the reference's evaluation prompt ("Document: " <C> "\\nQuestion: q\\nAnswer:
    a\\n\\nDocument: " ... "\\nQuestion: q\\nAnswer:"), each document a Block keyed by its example index;
    without documents the closed-book questions only. `shot_documents` (default `with_documents`):
    whether the shots keep theirs (the reference's closed-book baseline keeps them). A shot's answer
    is its first one. `layout` "arc_jax": prompts.few_shot_arc_jax (the arc_jax protocol)."""
    shot_documents = with_documents if shot_documents is None else shot_documents

    def qa(index: int, ex: Example, answer: str | None, document: bool) -> prompts.QA:
        return prompts.QA(ex.question, answer, Document(ex.document, index) if document else None)

    return prompts.few_shot([qa(i, ex, ex.answers[0], shot_documents) for i, ex in shots],
                            qa(*target, None, with_documents), layout=layout)


def long_context_template(target: tuple[int, Example], with_documents: bool, template: str | None = None,
                          compressed: bool = True) -> list[Piece]:
    """prompts.chat for generation, as tasks.long_context trains: "[INST]" + the instruction's
    prefix, <C...C>, the instruction, " [/INST] " + its suffix (an instruction may be the
    reference's "prefix||instruction||suffix"). Read as text, the document follows the head after a
    space and a newline ends it. With the reference's dataset `template` (TestItem of
    long_context/eval_downstream.py): compressed, the chat layout with the dataset's document label,
    query and answer label; otherwise its plain-text prompt."""
    index, ex = target
    if template is not None:  # the reference's: chat for compressed documents, plain text otherwise
        document = Document(ex.document, index) if with_documents else None
        if compressed:
            instruction = prompts.long_context_instruction(template, ex.instruction, ex.query)
            return prompts.chat(instruction, [document] if document else [])
        return prompts.long_context_text(template, document, ex.instruction, ex.query)
    blocks = [Document(ex.document, index, sep=" ")] if with_documents else []
    return prompts.chat(prompts.ChatInstruction.parse(ex.question), blocks)


def render_text(pieces: Iterable[Piece], document_text: Callable[[Document], str] = lambda d: d.text) -> str:
    """The prompt as one string, each document read as `document_text(document)`; in the chat
    layout a newline separates the document from the instruction."""
    pieces = list(pieces)
    chat = bool(pieces) and isinstance(pieces[0], str) and pieces[0].startswith(prompts.B_INST)
    return prompts.render_text(pieces, (lambda d: document_text(d) + "\n") if chat else document_text)


def truncate_to_tokens(text: str, n: int, tokenizer) -> str:
    """`text` cut to its first n tokens of `tokenizer` (decoded back to text)."""
    ids = tokenizer.encode(text)
    return text if len(ids) <= n else tokenizer.decode(ids[:n])


def n_slots(blocks: Sequence[np.ndarray]) -> int:
    """Decoder slots a compressed document takes (its vectors, special vectors included)."""
    return sum(len(b) for b in blocks)


@dataclasses.dataclass
class Prompt:
    """A prompt as `generate_ids` reads it (token-id lists and 2-D vector blocks), its length in
    decoder slots, the evaluated document's decoder tokens and slots (for the ratio), and the prompt
    as `arc-jax data show --json` pieces ({"text", "loss"}, {"compressed", "text"}, {"special"})."""

    pieces: list
    prefill: int
    document_tokens: int | None = None
    document_slots: int | None = None
    shown: list = dataclasses.field(default_factory=list)


def realize(pieces: Sequence[Piece], mode: str, tokenizer, blocks: Mapping[int, Sequence[np.ndarray]],
            target: int, special: bool = False, block_texts: Mapping[int, Sequence[str]] | None = None) -> Prompt:
    """The token-level prompt of a template in `mode`. `blocks[i]` holds the compressed blocks of
    example i's document (compressed and truncated modes), each ending with <Cont> when `special`;
    `block_texts[i]` the text of each (default: the document's); `target` is the evaluated example.
    A closed-book prompt reads the documents it holds (the shots', in the reference's baseline) as text."""
    bos = [[tokenizer.bos_id]] if tokenizer.bos_id is not None else []
    documents = [p for p in pieces if isinstance(p, Document)]
    target_docs = [d for d in documents if d.key == target]
    doc_tokens = len(tokenizer.encode(target_docs[0].text)) if target_docs else None
    if mode == "compressed":  # each run of text between blocks tokenised alone, as the training tasks do
        out, shown = list(bos), []
        for p in prompts.text_runs(pieces):
            if isinstance(p, str):
                out.append(tokenizer.encode(p))
                shown.append({"text": show_text(tokenizer, out[-1], out[:-1]), "loss": False})
                continue
            texts = (block_texts or {}).get(p.key) or [p.text] * len(blocks[p.key])
            for block, text in zip(blocks[p.key], texts):
                out.append(block)
                shown.append({"compressed": len(block) - special, "text": text})
                if special:
                    shown.append({"special": "cont"})
        if bos and shown and "loss" in shown[0]:
            shown[0]["text"] = "<bos>" + shown[0]["text"]
        elif bos:
            shown.insert(0, {"text": "<bos>", "loss": False})
        slots = n_slots(blocks[target]) if target_docs else None
    elif mode in ("open_book", "closed_book", "truncated"):
        if mode == "closed_book" and target_docs:
            raise ValueError("a closed-book prompt holds no document for the evaluated example")
        cut = {}
        if mode == "truncated":
            cut = {d.key: truncate_to_tokens(d.text, n_slots(blocks[d.key]), tokenizer) for d in documents}
        out = bos + [tokenizer.encode(render_text(pieces, lambda d: cut.get(d.key, d.text)))]
        shown = [{"text": "<bos>" * bool(bos) + show_text(tokenizer, out[-1], []), "loss": False}]
        slots = len(tokenizer.encode(cut[target])) if mode == "truncated" and target_docs else doc_tokens
    else:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    return Prompt(out, sum(len(p) for p in out), doc_tokens, slots, shown)


def show_text(tokenizer, ids: Sequence[int], before: Sequence) -> str:
    """Text ids decoded as `arc-jax data show` decodes them (after the text ids of `before`)."""
    from arc_jax.data.show import decode_text

    context = [t for piece in before if not isinstance(piece, np.ndarray) for t in piece]
    return decode_text(tokenizer, list(ids), context)


def first_line(text: str) -> str:
    """The arc_jax protocol's answer in generated text: up to its first newline, stripped."""
    return text.split("\n", 1)[0].strip()


def first_paragraph(text: str) -> str:
    """The reference protocol's answer: the generated text before its first blank line, stripped
    (embed_llm/models/augmented_model.py generate, truncate_line=True: text.split("\\n\\n")[0].strip();
    evaluate_trad's rule for an empty first part then keeps the stripped whole, which is empty too)."""
    return text.split("\n\n", 1)[0].strip()


def stop_ids(tokenizer, starts: str) -> list[int]:
    """EOS and every token whose text starts with `starts`: what comes after one is never part of the
    answer, so decoding may stop there (the token itself is left out, as the cut would drop it)."""
    ids = [tokenizer.eos_id]
    for i in range(tokenizer.vocab_size):
        try:
            if tokenizer.decode([i]).startswith(starts):
                ids.append(i)
        except Exception:  # noqa: BLE001 - ids a tokenizer cannot decode alone (specials, byte pieces)
            continue
    return sorted(set(ids))


def newline_stop_ids(tokenizer) -> list[int]:
    """The arc_jax protocol's stops: EOS and tokens that start a new line."""
    return stop_ids(tokenizer, "\n")


# --- Compression ---------------------------------------------------------------------------------

def compress_documents(pipe, texts: Sequence[str]) -> list[list[np.ndarray]]:
    """Few-shot documents: one block each, what `ARCPipeline.compress` gives (with <Cont>)."""
    return [[np.asarray(c.vectors)] for c in pipe.compress(list(texts))] if texts else []


def long_context_chunks(text: str, tokenizer, chunk_len: int, max_chunks: int) -> list[list[int]]:
    """tasks.long_context's chunks: encoder ids cut at max_chunks * chunk_len, in chunk_len pieces."""
    ids = tokenizer.encode(text)[: chunk_len * max_chunks]
    return [ids[i: i + chunk_len] for i in range(0, len(ids), chunk_len)]


def covered_text(text: str, tokenizer, chunk_len: int, max_chunks: int) -> str:
    """The part of a long document the chunks hold (all of it unless it is longer than the chunks)."""
    ids = tokenizer.encode(text)
    return text if len(ids) <= chunk_len * max_chunks else tokenizer.decode(ids[: chunk_len * max_chunks])


def compress_long_documents(pipe, texts: Sequence[str], chunk_len: int, max_chunks: int,
                            keep_special: bool = False) -> list[list[np.ndarray]]:
    """Long documents: each chunk compressed on its own, without special vectors (as trained), or
    with <Cont> after each (`keep_special`: the reference's long-context evaluation adds it)."""
    chunks = [long_context_chunks(t, pipe.encoder_tokenizer, chunk_len, max_chunks) for t in texts]
    flat = [c for doc in chunks for c in doc]
    blocks = pipe.encoder.compress(flat, decoder=pipe.decoder_index) if flat else []
    if pipe.encoder.config.cont_tok and not keep_special:  # compress appends <Cont>; long-context samples have none
        blocks = [b[:-1] for b in blocks]
    out, start = [], 0
    for doc in chunks:
        out.append([np.asarray(b) for b in blocks[start: start + len(doc)]])
        start += len(doc)
    return out


def cut_blocks(blocks: list[np.ndarray], texts: list[str], room: int, special: bool) -> tuple[list, list]:
    """The chunks' vectors cut to `room` in total (specials not counted), as the reference cuts the
    compressed long document to the tokens left in the window; each kept chunk keeps its special."""
    kept, kept_texts, used = [], [], 0
    for block, text in zip(blocks, texts):
        vectors = block[:-1] if special else block
        take = min(len(vectors), room - used)
        if take <= 0:
            break
        kept.append(np.concatenate([vectors[:take], block[-1:]]) if special else vectors[:take])
        kept_texts.append(text)
        used += take
    return kept, kept_texts


def fit_window(prompt: Prompt, tokenizer, limit: int, separator: str, query: str) -> Prompt:
    """A text prompt cut to `limit` tokens as TestItem.format_decoder_inputs cuts it: the end of the
    text before the query kept, then `separator` and the query (the start, BOS included, dropped)."""
    if prompt.prefill <= limit:
        return prompt
    text = tokenizer.decode([t for piece in prompt.pieces for t in piece if t != tokenizer.bos_id])
    if not text.endswith(query):
        raise ValueError("a long-context text prompt must end with its query")
    tail = tokenizer.encode(separator + query)
    before = [tokenizer.bos_id] * (tokenizer.bos_id is not None) + tokenizer.encode(text[: len(text) - len(query)])
    kept = before[len(before) - max(0, limit - len(tail)):] + tail
    shown = [{"text": show_text(tokenizer, kept, []), "loss": False}]
    return dataclasses.replace(prompt, pieces=[kept], prefill=len(kept), shown=shown)


# --- Protocols ----------------------------------------------------------------------------------

PROTOCOLS = ("reference", "arc_jax")
# Generation lengths: the reference's scripts/eval.sh runs --max_seq_len 64 (QA, and translation at
# the argparse default 64) and 256 for CNN (evaluate_QA also sets 256 for it).
MAX_NEW_TOKENS = {"reference": {"qa": 64, "translation": 64, "summarization": 256, "long_context": 64},
                  "arc_jax": DEFAULT_MAX_NEW_TOKENS}
REFERENCE_SHUFFLE = 0.42  # eval_context_comp.py's --seed: random.shuffle(records, random=lambda: seed)
REFERENCE_MAX_RECORDS = {"summarization": 1000}  # evaluate_QA evaluates at most 1000 CNN records


def reference_order(n: int, value: float = REFERENCE_SHUFFLE) -> list[int]:
    """The permutation random.shuffle(x, random=lambda: value) applied in the reference (Python's
    algorithm, whose `random` argument 3.11 removed: for i from n-1 down to 1, swap x[i] and
    x[floor(value * (i + 1))]); order[k] is the record at position k."""
    order = list(range(n))
    for i in reversed(range(1, n)):
        j = math.floor(value * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def reference_split(n_examples: int, shots: int, kind: str, max_examples: int | None,
                    value: float = REFERENCE_SHUFFLE) -> tuple[list[int], list[int]]:
    """(shot indices, evaluated indices) as the reference chooses them: the records shuffled by
    reference_order, the first `shots` the in-context examples (never evaluated), the rest evaluated
    in reverse order (evaluate_QA; evaluate_trad keeps translation's order), at most 1000 for
    summarisation and `max_examples` (its --n_samples). Long context (zero-shot): the file's order,
    or the first `max_examples` of the shuffle."""
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if n_examples <= shots:
        raise DataError(f"{n_examples} record(s) but {shots} shot(s): need at least one record beyond the shots")
    if kind == "long_context":  # eval_long_context.py: file order, or the first n of the shuffle with --n_samples
        return [], (reference_order(n_examples, value)[:max_examples] if max_examples else list(range(n_examples)))
    order = reference_order(n_examples, value)
    rest = order[shots:] if kind == "translation" else order[shots:][::-1]
    caps = [c for c in (max_examples, REFERENCE_MAX_RECORDS.get(kind)) if c is not None]
    return order[:shots], rest[: min(caps)] if caps else rest


# --- The evaluation loop -------------------------------------------------------------------------

@dataclasses.dataclass
class _ModeRun:
    records: list[dict] = dataclasses.field(default_factory=list)  # predictions/*.jsonl, in evaluation order
    seconds: float = 0.0


def evaluate(pipe, benchmarks: Sequence[Benchmark | str], modes: Sequence[str] = ("closed_book", "open_book",
             "compressed"), out_dir: str | Path | None = None, *, protocol: str = "reference", shots: int = 5,
             max_examples: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
             seed: float | None = None, max_passages: int = 1, chunk_len: int = 1024, max_chunks: int = 32,
             context_window: int | None = 4096, progress: bool = True, store=None) -> dict:
    """Evaluate `pipe` (an ARCPipeline) on each benchmark in each mode; returns the results dict
    (also written to out_dir as results.json, results.md and predictions/, after each batch).

    `protocol`: "reference" (kyutai-labs/ARC-Encoder's evaluation: its shot choice and order, the
    answer cut at the first blank line, 64 new tokens for QA and translation, 256 and at most 1000
    records for summaries) or "arc_jax" (this project's earlier one: shots drawn with an integer
    seed, evaluated records in file order, the answer cut at the first newline, 32 / 128 new
    tokens). `seed`: the reference's shuffle value (default 0.42) or arc_jax's seed (default 0).
    max_new_tokens None takes the protocol's default for the kind. Long-context benchmarks are
    zero-shot; in the reference protocol a file with a reference dataset template (Benchmark.template)
    is evaluated as its long_context/eval_long_context.py does: the chat prompt with the dataset's
    labels, <Cont> after each chunk when the encoder has it, the compressed vectors and the text
    prompts cut to fit `context_window` (Llama 2's 4096) with the new tokens, the answer the whole
    generation stripped. `store` (a CompressedStore that `arc-jax index` wrote from the benchmark
    file, with the document field and max_passages eval reads): the compressed and truncated modes
    read each document's block from the store record of the same file line instead of compressing
    it; refused unless the pipeline's encoder wrote the store for its decoder head and each record's
    encoder token ids are the document's. All files are read and checked first. With out_dir, an evaluation killed part-way
    resumes there: records already predicted (whole batches) are read back, not generated again,
    and the results are those of an uninterrupted run; out_dir must hold the same settings."""
    modes = list(dict.fromkeys(modes))
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes {modes} must be some of {', '.join(MODES)}")
    if batch_size < 1 or (max_examples is not None and max_examples < 1):
        raise ValueError(f"batch_size ({batch_size}) and max_examples ({max_examples}) must be >= 1")
    benches = _unique_names([parse_benchmark(b) if isinstance(b, str) else b for b in benchmarks])
    if not benches:
        raise ValueError("no benchmark to evaluate")
    seed = (REFERENCE_SHUFFLE if protocol == "reference" else 0) if seed is None else seed
    if store is not None:
        if any(b.kind == "long_context" for b in benches):
            raise ValueError("a store holds one block per document; long-context benchmarks (chunked) are compressed "
                             "online")
        if len(benches) != 1:
            raise ValueError(f"a store indexes one benchmark file, {len(benches)} given")
        store.check_encoder(pipe.encoder)
        if store.decoder_index != pipe.decoder_index:
            raise ValueError(f"{store.path} holds vectors for decoder head {store.decoder_index}, the pipeline's is "
                             f"{pipe.decoder_index}")
    need_document = any(m != "closed_book" for m in modes)
    loaded = [(b, load_examples(b, need_document, max_passages)) for b in benches]
    splits = []
    for b, ex in loaded:
        k = 0 if b.kind == "long_context" else shots
        splits.append(reference_split(len(ex), k, b.kind, max_examples, seed) if protocol == "reference"
                      else split_shots(len(ex), k, int(seed), max_examples))

    tokenizer = pipe.decoder_tokenizer
    vocab_limit = min(tokenizer.vocab_size, pipe.decoder.config.vocab_size)  # as ARCPipeline.generate
    stops = stop_ids(tokenizer, "\n\n" if protocol == "reference" else "\n")
    # The reference's long-context text prompts stop at a newline: scan the vocabulary again only for them.
    long_reference = protocol == "reference" and any(b.kind == "long_context" and b.template for b in benches)
    newline_stops = stop_ids(tokenizer, "\n") if long_reference else stops
    results = {"settings": {"protocol": protocol, "modes": modes, "shots": shots, "seed": seed,
                            "max_examples": max_examples, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                            "max_passages": max_passages, "chunk_len": chunk_len, "max_chunks": max_chunks,
                            "context_window": context_window,
                            "decoder_index": getattr(pipe, "decoder_index", None),
                            "store": None if store is None else str(store.path)},
               "benchmarks": {}}
    if out_dir is not None:
        _claim(Path(out_dir), results["settings"], [str(b.path) for b in benches])
    for (bench, examples), (shot_ids, eval_ids) in zip(loaded, splits):
        limit = max_new_tokens or MAX_NEW_TOKENS[protocol][bench.kind]
        decoding = _Decoding(tokenizer, limit, [i for i in stops if i < vocab_limit], vocab_limit, protocol,
                             [i for i in newline_stops if i < vocab_limit], context_window)
        results["benchmarks"][bench.name] = _evaluate_one(pipe, bench, examples, shot_ids, eval_ids, modes, decoding,
                                                          batch_size, chunk_len, max_chunks, progress, out_dir, store)
        if out_dir is not None:
            write_results(results, out_dir)
    return results


def _claim(out: Path, settings: dict, paths: list[str]) -> None:
    """Record the evaluation's settings in out/settings.json, or check that a resumed one has the
    same: resuming with other settings would mix two evaluations' predictions."""
    wanted = {**settings, "data": paths}
    path = out / "settings.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e}); remove it or use another --out") from None
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in wanted.items() if saved.get(k) != v]
        if changed:
            raise DataError(f"{out} holds an evaluation with other settings ({'; '.join(changed)}): "
                            "use another --out, or remove it to start over")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, (json.dumps(wanted, indent=1) + "\n").encode())


def _unique_names(benches: list[Benchmark]) -> list[Benchmark]:
    seen: dict[str, int] = {}
    out = []
    for b in benches:
        seen[b.name] = seen.get(b.name, 0) + 1
        out.append(b if seen[b.name] == 1 else dataclasses.replace(b, name=f"{b.name}-{seen[b.name]}"))
    return out


class _Decoding(NamedTuple):
    tokenizer: object
    max_new_tokens: int
    stop_ids: list[int]
    vocab_limit: int
    protocol: str
    newline_stops: list[int]  # the reference's long-context baselines stop at a newline
    window: int | None  # the reference's long-context input_max_len

    def answer(self, text: str, long_reference: bool = False) -> str:
        if long_reference:  # eval_long_context.py: the generated text stripped, no cut
            return text.strip()
        return first_paragraph(text) if self.protocol == "reference" else first_line(text)

    def stops(self, long_reference: bool, mode: str) -> list[int]:
        """The reference's long-context compressed prompts stop at EOS only, its text prompts at a
        newline too; everything else at the protocol's stops."""
        if long_reference:
            return [self.tokenizer.eos_id] if mode == "compressed" else self.newline_stops
        return self.stop_ids


def _predictions_path(out_dir, bench: Benchmark, mode: str) -> Path:
    return Path(out_dir) / "predictions" / f"{_file_name(bench.name)}.{mode}.jsonl"


def _done_records(path: Path, expected_lines: list[int]) -> list[dict]:
    """The records an earlier, interrupted run wrote for these evaluated lines (whole batches; a
    torn last line is dropped), or [] when there are none."""
    if not path.exists():
        return []
    records = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(raw))
        except ValueError:
            break
    if [r.get("line") for r in records] != expected_lines[: len(records)]:
        raise DataError(f"{path}: its records are not those of this evaluation; remove it or use another --out")
    return records


class _BenchmarkRun:
    """One benchmark's evaluation: its examples (long documents cut to what the chunks hold), how
    its prompts are laid out, compressed and cut, and its prediction records."""

    def __init__(self, pipe, bench: Benchmark, examples: list[Example], shot_ids: list[int], decoding: _Decoding,
                 chunk_len: int, max_chunks: int, store=None):
        self.pipe, self.bench, self.decoding = pipe, bench, decoding
        self.chunk_len, self.max_chunks = chunk_len, max_chunks
        self.long = bench.kind == "long_context"
        self.reference = decoding.protocol == "reference"
        self.long_reference = self.long and self.reference and bench.template is not None
        self.special = (not self.long or self.long_reference) and bool(pipe.encoder.config.cont_tok)
        if self.long:  # every mode reads what the chunks hold
            examples = [dataclasses.replace(ex, document=covered_text(ex.document, pipe.encoder_tokenizer, chunk_len,
                                                                      max_chunks)) if ex.document else ex
                        for ex in examples]
        self.examples = examples
        self.shots = [(i, examples[i]) for i in shot_ids]
        self.block_texts: dict[int, list[str]] = {}
        metric_names = (REFERENCE_METRICS_BY_KIND if self.reference else METRICS_BY_KIND)[bench.kind]
        if any(ex.document is None for ex in examples):  # "context holds the answer" needs the contexts
            metric_names = tuple(m for m in metric_names if m not in CONTEXT_METRICS)
        self.metric_names = metric_names
        self.per_record = [m for m in metric_names if m not in CORPUS_METRICS]  # BLEU: a corpus metric only
        self.store = store

    def compress(self, indices: list[int]) -> dict[int, list[np.ndarray]]:
        """The compressed blocks of these examples' documents (long ones: a block per chunk, cut to
        the window in the reference protocol)."""
        pipe, tokenizer, decoding = self.pipe, self.decoding.tokenizer, self.decoding
        texts = [self.examples[i].document for i in indices]
        if self.store is not None:
            return {i: [block.vectors] for i, block in zip(indices, self.store.read(self.store_records(indices)))}
        if not self.long:
            return dict(zip(indices, compress_documents(pipe, texts)))
        for i in indices:
            self.block_texts[i] = [pipe.encoder_tokenizer.decode(c) for c in long_context_chunks(
                self.examples[i].document, pipe.encoder_tokenizer, self.chunk_len, self.max_chunks)]
        compressed = compress_long_documents(pipe, texts, self.chunk_len, self.max_chunks, keep_special=self.special)
        if self.long_reference and decoding.window:  # the vectors that fit the window (TestItem.get_text)
            for i, doc_blocks in zip(indices, compressed):
                ex = self.examples[i]
                instruction = prompts.long_context_instruction(self.bench.template, ex.instruction, ex.query)
                head = "||".join((instruction.prefix, instruction.instruction, instruction.suffix))
                room = decoding.window - len(tokenizer.encode(head)) - decoding.max_new_tokens
                doc_blocks[:], self.block_texts[i][:] = cut_blocks(doc_blocks, self.block_texts[i], room, self.special)
        return dict(zip(indices, compressed))

    def store_records(self, indices: list[int]) -> list[int]:
        """The store records of these examples' documents: the record indexed from the same line of
        the benchmark file, refused (one line) when there is none or its encoder token ids differ."""
        records = []
        for i in indices:
            ex = self.examples[i]
            k = self.store.index_of_line(ex.line)
            where = f"{self.bench.path}:{ex.line}"
            if k is None:
                raise DataError(f"{self.store.path} has no record of line {ex.line} ({where}); index this benchmark "
                                "file with arc-jax index")
            if self.store.token_hashes[k].tobytes() != token_hash(self.pipe.encoder_tokenizer.encode(ex.document)):
                raise DataError(f"{self.store.path}: its record of line {ex.line} is not the document eval reads at "
                                f"{where} (its encoder token ids differ); index this file with the field and "
                                "--max-passages eval reads")
            records.append(k)
        return records

    def template(self, i: int, mode: str) -> list[Piece]:
        if self.long:
            return long_context_template((i, self.examples[i]), mode != "closed_book",
                                         self.bench.template if self.long_reference else None, mode == "compressed")
        # The reference's closed-book baseline keeps the shots' documents (as text), when they have any.
        shot_documents = self.reference and all(ex.document for _, ex in self.shots)
        return few_shot_template(self.shots, (i, self.examples[i]), mode != "closed_book",
                                 shot_documents=shot_documents or mode != "closed_book",
                                 layout="reference" if self.reference else "arc_jax")

    def prompts(self, batch: list[int], mode: str, blocks) -> list[Prompt]:
        tokenizer, decoding, bench = self.decoding.tokenizer, self.decoding, self.bench
        out = [realize(self.template(i, mode), mode, tokenizer, blocks, i, self.special, self.block_texts)
               for i in batch]
        if self.long_reference and decoding.window and mode != "compressed":
            out = [fit_window(p, tokenizer, decoding.window - decoding.max_new_tokens,
                              prompts.LONG_CONTEXT_TRUNCATED[bench.template],
                              prompts.long_context_query(bench.template, self.examples[i].instruction,
                                                         self.examples[i].query))
                   for i, p in zip(batch, out)]
        return out

    def record(self, i: int, prompt: Prompt, ids) -> dict:
        """The prediction record of example i: prompt as read, generation, answer, references, metrics."""
        ex, generation = self.examples[i], self.decoding.tokenizer.decode(ids)
        prediction = self.decoding.answer(generation, self.long_reference)
        metrics = record_scores(self.per_record, prediction, ex.answers, ex.document)
        return {"line": ex.line, "question": ex.question, "prompt": prompt.shown, "generation": generation,
                "prediction": prediction, "answers": list(ex.answers),
                "metrics": {m: 100.0 * v for m, v in metrics.items()}, "prefill_tokens": prompt.prefill,
                "compression_ratio": prompt.document_tokens / prompt.document_slots if prompt.document_slots else None}

    def mode_result(self, run: _ModeRun, eval_ids: list[int]) -> dict:
        predictions = [r["prediction"] for r in run.records]
        answers = [self.examples[i].answers for i in eval_ids]
        contexts = [self.examples[i].document for i in eval_ids]
        ratios = [r["compression_ratio"] for r in run.records if r["compression_ratio"] is not None]
        return {"metrics": {m: score(m, predictions, answers, contexts) for m in self.metric_names},
                "n": len(predictions), "compression_ratio": float(np.mean(ratios)) if ratios else None,
                "prefill_tokens": float(np.mean([r["prefill_tokens"] for r in run.records]))}


def _resume(runs: dict[str, _ModeRun], out_dir, bench: Benchmark, lines: list[int], batch_size: int) -> int:
    """Read back what an interrupted run predicted and return the first evaluated position to do:
    a batch boundary every mode has reached (a mode's later records, or a torn line, are dropped)."""
    if out_dir is None:
        return 0
    for mode, run in runs.items():
        run.records = _done_records(_predictions_path(out_dir, bench, mode), lines)
    start = min(len(r.records) for r in runs.values()) // batch_size * batch_size
    for mode, run in runs.items():
        extra = len(run.records) > start
        del run.records[start:]
        if start and extra:
            path = _predictions_path(out_dir, bench, mode)
            write_file_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in run.records).encode())
    return start


def _evaluate_one(pipe, bench: Benchmark, examples: list[Example], shot_ids: list[int], eval_ids: list[int],
                  modes: list[str], decoding: _Decoding, batch_size: int, chunk_len: int, max_chunks: int,
                  progress: bool, out_dir, store=None) -> dict:
    from tqdm import tqdm

    bench_run = _BenchmarkRun(pipe, bench, examples, shot_ids, decoding, chunk_len, max_chunks, store)
    examples = bench_run.examples
    if store is not None:  # every document checked before any generation
        bench_run.store_records(list(dict.fromkeys(shot_ids + eval_ids)))
    runs = {m: _ModeRun() for m in modes}
    start = _resume(runs, out_dir, bench, [examples[i].line for i in eval_ids], batch_size)
    needs_blocks = any(m in ("compressed", "truncated") for m in modes)
    shot_blocks = bench_run.compress(shot_ids) if needs_blocks and start < len(eval_ids) else {}
    bar = tqdm(total=len(eval_ids) * len(modes), initial=start * len(modes), desc=bench.name, unit="prompt",
               disable=not progress)
    for first in range(start, len(eval_ids), batch_size):
        batch = eval_ids[first: first + batch_size]
        blocks = {**shot_blocks, **(bench_run.compress(batch) if needs_blocks else {})}
        for mode in modes:
            bar.set_postfix(mode=mode)
            prompts_ = bench_run.prompts(batch, mode, blocks)
            began = time.perf_counter()
            out = pipe.generate_ids([p.pieces for p in prompts_], decoding.max_new_tokens, 0.0,
                                    stop_ids=decoding.stops(bench_run.long_reference, mode),
                                    vocab_limit=decoding.vocab_limit)
            runs[mode].seconds += time.perf_counter() - began
            new = [bench_run.record(i, prompt, ids) for i, prompt, ids in zip(batch, prompts_, out)]
            runs[mode].records += new
            if out_dir is not None:
                _append_records(_predictions_path(out_dir, bench, mode), new, first == 0)
            bar.update(len(batch))
    bar.close()

    result = {"kind": bench.kind, "path": str(bench.path), "n": len(eval_ids),
              "shot_lines": [examples[i].line for i in shot_ids], "max_new_tokens": decoding.max_new_tokens,
              "modes": {}}
    if bench.language:
        result["language"] = bench.language
    for mode, run in runs.items():
        result["modes"][mode] = bench_run.mode_result(run, eval_ids)
        if out_dir is not None:
            _write_timing(Path(out_dir), bench.name, mode, run.seconds)
    return result


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _append_records(path: Path, records: list[dict], fresh: bool) -> None:
    """Append one batch's prediction records (a fresh file for the first batch), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w" if fresh else "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _write_timing(out: Path, bench: str, mode: str, seconds: float) -> None:
    """Generation seconds per benchmark and mode, in timing.json (apart from results.json, which a
    resumed evaluation reproduces exactly); a resumed run adds its seconds to the earlier run's."""
    path = out / "timing.json"
    timing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    key = f"{bench}/{mode}"
    timing[key] = timing.get(key, 0.0) + seconds
    write_file_atomic(path, (json.dumps(timing, indent=1) + "\n").encode())


# --- Reports -------------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(results: dict) -> str:
    """One row per benchmark and mode: metric values, n, compression ratio, mean prefill tokens;
    then, with several benchmarks, the mean of each benchmark's main metric per mode."""
    benches = results["benchmarks"]
    metrics = [m for m in METRIC_NAMES if any(m in r["metrics"] for b in benches.values() for r in b["modes"].values())]
    header = ["benchmark", "kind", "mode", *(METRIC_NAMES[m] for m in metrics), "n", "ratio", "prefill tokens"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, bench in benches.items():
        for mode, r in bench["modes"].items():
            cells = [name, bench["kind"], mode, *(_number(r["metrics"].get(m)) for m in metrics), str(r["n"]),
                     _number(r["compression_ratio"]), _number(r["prefill_tokens"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
    if len(benches) > 1:
        lines += ["", "Mean of the main metric (" + ", ".join(
            f"{k}: {METRIC_NAMES[METRICS_BY_KIND[k][0]]}" for k in KINDS
            if any(b["kind"] == k for b in benches.values())) + "):", "",
            "| mode | mean | benchmarks |", "|---|---|---|"]
        modes = list(dict.fromkeys(m for b in benches.values() for m in b["modes"]))
        for mode in modes:
            values = [b["modes"][mode]["metrics"][METRICS_BY_KIND[b["kind"]][0]] for b in benches.values()
                      if mode in b["modes"]]
            lines.append(f"| {mode} | {_number(float(np.mean(values)))} | {len(values)} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str | Path) -> None:
    """results.json and results.md in out_dir (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown_table(results), encoding="utf-8")
