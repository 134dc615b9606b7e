"""Every prompt layout arc_jax trains on or reads: few-shot QA (also translation and summaries,
which are QA with a task question), and the Llama 2 Chat layout (chat pretraining, long context).

A layout is a list of pieces: `str` (text without loss), `Block` (where a compressed document
goes), `Answer` (an in-context example's answer: text without loss, kept apart so that the demo's
decoder LM can weight it), `Target` (text the decoder learns to write), `Cut` (a tokenizer-call
boundary, for arc_jax's earlier few-shot layout, `few_shot_arc_jax`). The training tasks
(arc_jax/data/tasks.py), the evaluation harness (arc_jax/evaluation/harness.py) and the demo's
decoder LM (arc_jax/demo/decoder_lm.py) all build their prompts here.

The reference (kyutai-labs/ARC-Encoder) encodes each run of text between two compressed blocks in
one tokenizer call, so token boundaries follow the blocks: `text_runs` joins a layout's adjacent
text pieces the same way, and `encode` tokenises them. The strings, with where each comes from:

Few-shot QA, training (embed_llm/data/sequence_iterators.py, interleave branch of
sequence_iterator_reconstruction; embed_llm/data/utils.py TEMPLATES_FOR_QA), every document
compressed, loss on the last answer and EOS:

    [BOS]"Document: " <C> "\\nQuestion: q1\\nAnswer: a1\\n\\nDocument: " <C> ... "\\nQuestion: q\\nAnswer: " | answer [EOS]

Few-shot QA, evaluation (embed_llm/generation/utils.py create_prompt_prefix, create_prompt): the
same pieces, the prompt ending "\\nQuestion: q\\nAnswer:" without the training's trailing space
(the reference's training and evaluation differ there; both are reproduced). Read as plain text
(open book) a document follows "Document: " directly; without documents (closed book) the pieces
are "Question: q1\\nAnswer: a1\\n\\nQuestion: q\\nAnswer:", and the reference's closed-book baseline
keeps the shots' documents before "\\n\\n\\nQuestion: q\\nAnswer:".

Llama 2 Chat (embed_llm/models/utils/utils.py format_for_chat, as prepare_forward calls it in
embed_llm/models/augmented_model.py): an instruction "prefix||instruction||suffix" lays out as

    [BOS]("[INST] " + prefix + text_before).strip() <C>... instruction.strip() | " [/INST] " + suffix + target.strip() + " " [EOS]

with loss on the last piece after its first len(encode(" [/INST] " + suffix)) tokens, and EOS.
When generating, the last piece is f"{text_after.strip()} [/INST] {suffix}" without loss or EOS.

Long-context evaluation (embed_llm/generation/long_context/eval_downstream.py, TestItem): per
dataset a document label ("Story:\\n", ...), a query and an answer label, in the chat layout for
compressed documents (`long_context_instruction`) and as plain text otherwise (`long_context_text`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

# --- Few-shot QA -----------------------------------------------------------------------------------

DOCUMENT = "Document: "
QUESTION = "\nQuestion: {question}\nAnswer:"
CLOSED_BOOK_QUESTION = "Question: {question}\nAnswer:"
EXAMPLE_SEPARATOR = "\n\n"
# The task questions of the reference's fine-tuning and evaluation data (translation: the paper's
# and scripts/synt_data/finetuning_data.py's first wording; summaries: arc_jax's own, for files
# whose records carry no question).
TRANSLATION_QUESTION = "Translate the previous document into {language}."
SUMMARY_QUESTION = "Summarize the previous document."

# --- Llama 2 Chat (embed_llm/data/utils.py, embed_llm/models/utils/utils.py) -----------------------

B_INST, E_INST = "[INST]", "[/INST]"
RECONSTRUCTION_INSTRUCT = "Text:\n\n||\nReplicate the input text.||Replicated text:\n"
CONTINUATION_INSTRUCT = "Text:\n\n||\nContinue the previous text.||Text continuation:\n..."


@dataclasses.dataclass(frozen=True)
class Block:
    """A compressed document's place in a prompt. `text` is the document; `key` names it for whoever
    compresses it (the evaluation caches blocks by example index); read as plain text, `sep` joins
    it to the text before it."""

    text: str
    key: int = 0
    sep: str = ""


@dataclasses.dataclass(frozen=True)
class Answer:
    """An in-context example's answer: plain text, without loss."""

    text: str


@dataclasses.dataclass(frozen=True)
class Target:
    """Text the decoder learns to write, encoded in one call as `lead + text`: the loss is on the
    tokens after the first len(encode(lead)) (the reference's count), then on EOS when `eos`."""

    text: str
    lead: str = ""
    eos: bool = True


@dataclasses.dataclass(frozen=True)
class Cut:
    """A tokenizer-call boundary between two texts (arc_jax's earlier few-shot layout encodes each
    piece alone); read as text, nothing."""


Piece = Union[str, Block, Answer, Target, Cut]


@dataclasses.dataclass(frozen=True)
class QA:
    """One example of a few-shot prompt: its question, its answer (None for the evaluated one), and
    its document (None: closed book)."""

    question: str
    answer: str | None = None
    document: Block | None = None


ANSWER_LAYOUTS = ("reference", "eval")
FEW_SHOT_LAYOUTS = ("reference", "arc_jax")


def few_shot(shots: Sequence[QA], target: QA, *, training: bool = False, answer_layout: str = "reference",
             layout: str = "reference") -> list[Piece]:
    """The few-shot prompt: each shot's document, question and answer, then the target's document
    and question; with `training`, "\\nAnswer: " and the target's answer as a Target (the reference
    trains so; `answer_layout` "eval": "\\nAnswer:" and " " + answer in one tokenizer call, the tokens
    a decoder generates after the evaluation prompt), else ending at "\\nAnswer:" (as it evaluates). Examples without a document are
    closed book ("Question: ..."), a layout of questions only; a target without a document after
    shots with theirs keeps its "\\nQuestion: ..." line (the reference's closed-book baseline,
    eval_context_comp_baselines.py, whose prefix ends with "\\n\\n"). `layout` "arc_jax":
    few_shot_arc_jax."""
    if layout not in FEW_SHOT_LAYOUTS:
        raise ValueError(f"few-shot layout {layout!r}: expected one of {FEW_SHOT_LAYOUTS}")
    if layout == "arc_jax":
        return few_shot_arc_jax(shots, target, training=training)
    pieces: list[Piece] = []
    for i, ex in enumerate([*shots, target]):
        gap = EXAMPLE_SEPARATOR if i else ""
        if ex.document is not None:
            pieces += [gap + DOCUMENT, ex.document, QUESTION.format(question=ex.question)]
        elif i and shots[i - 1].document is not None:  # the reference's closed-book baseline: shots
            pieces.append(gap + QUESTION.format(question=ex.question))  # with documents, "\n\n\nQuestion:"
        else:
            pieces.append(gap + CLOSED_BOOK_QUESTION.format(question=ex.question))
        if i < len(shots):
            pieces.append(Answer(f" {ex.answer}"))
    if training:
        if target.answer is None:
            raise ValueError("a training prompt needs the target's answer")
        if answer_layout not in ANSWER_LAYOUTS:
            raise ValueError(f"answer_layout {answer_layout!r}: expected one of {ANSWER_LAYOUTS}")
        pieces += [" ", Target(target.answer)] if answer_layout == "reference" else [Target(f" {target.answer}")]
    return pieces


def few_shot_arc_jax(shots: Sequence[QA], target: QA, *, training: bool = False) -> list[Piece]:
    """arc_jax's earlier few-shot layout (the data and evaluation layout "arc_jax"), each piece its own
    tokenizer call: "Document:" (no space; "\\n\\nDocument:" after the first), <C>,
    "\\nQuestion: q\\nAnswer:", " a" for each shot, ...; training ends with " answer" and EOS. Read as
    text a document follows "Document:" after a space; without documents "Question: q\\nAnswer:"."""
    pieces: list[Piece] = []
    for i, ex in enumerate([*shots, target]):
        gap = EXAMPLE_SEPARATOR if i else ""
        if ex.document is not None:
            pieces += [Cut(), gap + "Document:", dataclasses.replace(ex.document, sep=" "),
                       QUESTION.format(question=ex.question)]
        else:
            pieces += [Cut(), gap + CLOSED_BOOK_QUESTION.format(question=ex.question)]
        if i < len(shots):
            pieces += [Cut(), Answer(f" {ex.answer}")]
    if training:
        if target.answer is None:
            raise ValueError("a training prompt needs the target's answer")
        pieces.append(Target(f" {target.answer}"))
    return pieces


# --- Llama 2 Chat ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChatInstruction:
    """An instruction of the chat layout: text before the blocks, the instruction after them, and
    the text that opens the answer. `parse` reads the reference's "prefix||instruction||suffix"."""

    prefix: str = ""
    instruction: str = ""
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> ChatInstruction:
        """"prefix||instruction||suffix" as the reference splits it; text without "||" is the
        instruction alone."""
        parts = text.split("||")
        if len(parts) == 1:
            return cls(instruction=text)
        if len(parts) != 3:
            raise ValueError(f"instruction {text!r}: expected 'prefix||instruction||suffix' (two '||')")
        return cls(*parts)


RECONSTRUCTION = ChatInstruction.parse(RECONSTRUCTION_INSTRUCT)
CONTINUATION = ChatInstruction.parse(CONTINUATION_INSTRUCT)


def chat(instruction: ChatInstruction, blocks: Sequence[Block], *, before: str = "", target: str | None = None,
         after: str = "") -> list[Piece]:
    """The Llama 2 Chat layout of format_for_chat (no system message): the head ("[INST] " +
    prefix + `before`, stripped), the blocks, the instruction (stripped), then with `target` the
    tail " [/INST] " + suffix + target (stripped) + " ", loss after " [/INST] " + suffix, and EOS;
    without it (generation) the tail f"{after.strip()} [/INST] {suffix}"."""
    head, text = f"{B_INST} {instruction.prefix}{before}".strip(), instruction.instruction.strip()
    # Without a block (a closed-book prompt, which format_for_chat never makes) a space joins them.
    pieces: list[Piece] = [head, *blocks, text] if blocks else [f"{head} {text}"]
    if target is None:
        pieces.append(f"{after.strip()} {E_INST} {instruction.suffix}")
    else:
        pieces.append(Target(f"{target.strip()} ", lead=f" {E_INST} {instruction.suffix}"))
    return pieces


# --- Reading a layout ------------------------------------------------------------------------------

def text_runs(pieces: Sequence[Piece]) -> list[str | Block | Target]:
    """The layout as the reference tokenises it: adjacent text (str and Answer) joined into one
    string per run, unless a Cut separates them; empty runs dropped."""
    out: list[str | Block | Target] = []
    cut = False
    for p in pieces:
        if isinstance(p, Cut):
            cut = True
            continue
        text = p.text if isinstance(p, Answer) else p
        if isinstance(text, str):
            if out and isinstance(out[-1], str) and not cut:
                out[-1] += text
            else:
                out.append(text)
        else:
            out.append(p)
        cut = False
    return [p for p in out if not (isinstance(p, str) and not p)]


def render_text(pieces: Sequence[Piece], document_text=lambda block: block.text) -> str:
    """The layout as one string (targets without their EOS), each block read as document_text(block)."""
    parts = []
    for p in pieces:
        if isinstance(p, Block):
            parts.append(p.sep + document_text(p))
        elif isinstance(p, Target):
            parts.append(p.lead + p.text)
        elif isinstance(p, Cut):
            continue
        else:
            parts.append(p.text if isinstance(p, Answer) else p)
    return "".join(parts)


def encode(pieces: Sequence[Piece], tokenizer, bos: bool = True) -> list[tuple[list[int], list[bool]] | Block]:
    """The layout tokenised: per text run (ids, loss flag of each id as a target) and the blocks in
    place. BOS (when `bos` and the tokenizer has one) opens the first run."""
    out: list[tuple[list[int], list[bool]] | Block] = []
    if bos and tokenizer.bos_id is not None:
        out.append(([tokenizer.bos_id], [False]))
    for run in text_runs(pieces):
        if isinstance(run, Block):
            out.append(run)
            continue
        if isinstance(run, Target):
            ids = tokenizer.encode(run.lead + run.text)
            unscored = min(len(tokenizer.encode(run.lead)) if run.lead else 0, len(ids))
            ids, flags = ids + [tokenizer.eos_id] * run.eos, [False] * unscored + [True] * (len(ids) - unscored + run.eos)
        else:
            ids = tokenizer.encode(run)
            flags = [False] * len(ids)
        if out and not isinstance(out[-1], Block):  # after BOS or a Target: one stream
            out[-1] = (out[-1][0] + ids, out[-1][1] + flags)
        else:
            out.append((ids, flags))
    return out


# --- Long-context evaluation (embed_llm/generation/long_context/eval_downstream.py) ---------------

# Per dataset (the reference's names: NarrativeQA, Qasper, GovReport, SummScreenFD, QMSum): the text
# before the document, the query after it (its answer left empty), and what replaces the document's
# end when the open-book prompt is cut to the decoder's window.
LONG_CONTEXT_DOCUMENT = {"NQA": "Story:\n", "Qspr": "Article:\n", "GvRp": "Report:\n", "SSFD": "Episode Script:\n",
                         "QMSum": "Transcript:\n"}
LONG_CONTEXT_QUERY = {"NQA": "{instruction}Question:\n{question}\n\nAnswer:\n",
                      "Qspr": "{instruction}Question:\n{question}\n\nAnswer:\n",
                      "GvRp": "{instruction}Summary:\n", "SSFD": "{instruction}Summary:\n",
                      "QMSum": "{instruction}Query:\n{question}\n\nAnswer:\n"}
LONG_CONTEXT_TRUNCATED = {"NQA": "... [The rest of the story is omitted]\n\n",
                          "Qspr": "... [The rest of the article is omitted]\n\n",
                          "GvRp": "... [The rest of the report is omitted]\n\n",
                          "SSFD": "... [The rest of the episode script is omitted]\n\n",
                          "QMSum": "... [The rest of the transcript is omitted]\n\n"}


def long_context_query(dataset: str, instruction: str | None, question: str | None) -> str:
    """TestItem's test_text: the dataset's query with the record's instruction and question."""
    return LONG_CONTEXT_QUERY[dataset].format(instruction=instruction or "", question=question or "")


def long_context_instruction(dataset: str, instruction: str | None, question: str | None) -> ChatInstruction:
    """The chat instruction of the compressed long-context prompt (TestItem.get_text): the document
    label as prefix, the query without its "\\n\\nAnswer:\\n" / "Summary:\\n" as instruction, that
    answer label as suffix."""
    query = long_context_query(dataset, instruction, question)
    suffix = "Answer:\n" if "Answer:" in query else "Summary:\n"
    return ChatInstruction(LONG_CONTEXT_DOCUMENT[dataset], query.replace("\n\nAnswer:\n", "").replace("Summary:\n", ""),
                           suffix)


def long_context_text(dataset: str, document: Block | None, instruction: str | None, question: str | None
                      ) -> list[Piece]:
    """The open-book (vanilla) long-context prompt, plain text (TestItem.format_decoder_inputs): the
    document label, the document and a blank line, then the query; without a document the label
    and the query."""
    query = long_context_query(dataset, instruction, question)
    if document is None:
        return [LONG_CONTEXT_DOCUMENT[dataset] + query]
    return [LONG_CONTEXT_DOCUMENT[dataset], document, EXAMPLE_SEPARATOR + query]
