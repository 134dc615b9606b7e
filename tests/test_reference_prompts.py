"""Fine-tuning, chat and long-context samples as the reference (kyutai-labs/ARC-Encoder, commit
3e04c97) lays them out, written by hand from its code (notes/reference_recipe.md 3.1-3.4, 5.1-5.2)
and compared with what arc_jax's tasks build through arc_jax.prompts:

- few-shot: embed_llm/data/sequence_iterators.py, sequence_iterator_reconstruction's interleave
  branch (each text piece one `encode` call: "Document: " with BOS, "\\nQuestion: q\\nAnswer: a\\n\\n
  Document: " per shot, "\\nQuestion: q\\nAnswer: " then encode(answer, eos=True)), loss on the last
  answer and EOS; embed_llm/data/tokenize.py get_sample (passages encoded with the encoder's
  tokenizer, n = randint(1, max_passages) before slicing);
- chat: embed_llm/models/utils/utils.py format_for_chat with embed_llm/data/utils.py's
  RECONSTRUCTION_INSTRUCT / CONTINUATION_INSTRUCT split on "||" (augmented_model.py prepare_forward);
- evaluation: embed_llm/generation/utils.py create_prompt_prefix and create_prompt.

Tokenizers: one id per character (tests/char_tokenizers.py), so each expected id list is its text.
"""

import numpy as np
import pytest
from char_tokenizers import DEC, ENC, B, E, d, e

from arc_jax import prompts
from arc_jax.data import tasks


def stream(sample):
    """The decoder's whole token stream (x plus the last target) and each token's loss flag."""
    return list(sample.x) + [sample.y[-1]], [False] + list(sample.loss_mask)


def record(i, passages=None, answers=None):
    return tasks.QARecord.from_json({"question": f"q{i}?", "answer": answers or [f"a{i}"],
                                     "passages": passages or [f"p{i}"]})


# --- few-shot fine-tuning ---------------------------------------------------------------------------

def test_few_shot_sample_is_the_reference_interleaved_layout():
    s = tasks.few_shot([record(0), record(1), record(2)], np.random.default_rng(0), DEC, ENC)
    pieces = [[B] + d("Document: "),
              d("\nQuestion: q0?\nAnswer: a0\n\nDocument: "),
              d("\nQuestion: q1?\nAnswer: a1\n\nDocument: "),
              d("\nQuestion: q2?\nAnswer: ") + d("a2") + [E]]
    tokens, loss = stream(s)
    assert tokens == sum(pieces, [])
    assert list(s.insertions) == [len(p) for p in pieces[:-1]]
    assert [list(c) for c in s.contexts] == [e("p0"), e("p1"), e("p2")]
    assert loss == [False] * (len(tokens) - 3) + [True] * 3  # "a2" and EOS
    assert s.special == "cont" and s.task == "fewshot"


def test_without_shots_the_question_follows_its_only_document():
    s = tasks.few_shot([record(5, answers=["yes"])], np.random.default_rng(0), DEC, ENC)
    tokens, loss = stream(s)
    assert tokens == [B] + d("Document: ") + d("\nQuestion: q5?\nAnswer: yes") + [E]
    assert list(s.insertions) == [1 + len("Document: ")] and sum(loss) == len("yes") + 1


def test_eval_answer_layout_ends_the_prompt_as_evaluation_does():
    """answer_layout "eval": "\\nQuestion: q\\nAnswer:" then " a" + EOS in one call, the loss on " a"."""
    s = tasks.few_shot([record(5, answers=["yes"])], np.random.default_rng(0), DEC, ENC, answer_layout="eval")
    tokens, loss = stream(s)
    assert tokens == [B] + d("Document: ") + d("\nQuestion: q5?\nAnswer:") + d(" yes") + [E]
    assert sum(loss) == len(" yes") + 1 and loss[-5:] == [True] * 5


def test_passages_are_drawn_capped_and_joined_as_the_reference_joins_them():
    """The evaluated document: the passages' token lists concatenated (no separator), each cut to
    max_passage_len; a shot's document: the cut passages' texts stripped, joined by " "."""
    shot = record(0, passages=[" first passage ", "second"])
    target = record(1, passages=["alpha", "beta gamma"])
    seen_target, seen_shot = set(), set()
    for seed in range(40):
        s = tasks.few_shot([shot, target], np.random.default_rng(seed), DEC, ENC, max_passages=4,
                           max_passage_len=5)
        seen_shot.add(tuple(s.contexts[0]))
        seen_target.add(tuple(s.contexts[1]))
    assert seen_target == {tuple(e("alpha")), tuple(e("alpha") + e("beta "))}
    assert seen_shot == {tuple(e("firs")), tuple(e("firs secon"))}  # " firs" stripped


def test_passage_count_is_drawn_before_clipping_to_what_the_record_has():
    """randint(1, max_passages) then passages[:n]: a 2-passage record gets both 3 times in 4."""
    target = record(1, passages=["a", "b"])
    both = sum(len(tasks.few_shot([target], np.random.default_rng(seed), DEC, ENC, max_passages=4).contexts[0]) == 2
               for seed in range(800))
    assert abs(both / 800 - 0.75) < 0.05


# --- Llama 2 Chat pretraining ---------------------------------------------------------------------

def chat_stream(prefix_head, instruction, tail_lead, target):
    """format_for_chat by hand: (tokens, loss) with the block after the head."""
    head = [B] + d(prefix_head)
    tail = d(tail_lead + target + " ") + [E]
    tokens = head + d(instruction) + tail
    loss = [False] * (len(head) + len(instruction) + len(tail_lead)) + [True] * (len(target) + 2)
    return tokens, loss, len(head)


def test_chat_reconstruction_and_continuation_are_format_for_chat():
    text = "abcdefghijklmnop"
    rec = tasks.reference_reconstruction(text, DEC, ENC, max_len=8, chat=True)
    tokens, loss, at = chat_stream("[INST] Text:", "Replicate the input text.", " [/INST] Replicated text:\n",
                                   "abcdefgh")
    assert stream(rec[0]) == (tokens, loss) and list(rec[0].insertions) == [at]
    assert list(rec[0].contexts[0]) == e("abcdefgh") and rec[0].special == "rec"
    # x = tokens[:-1] (no BOS or EOS for an instruct decoder): the last window is "ijklmno"
    assert DEC.decode([t for t, m in zip(rec[-1].y, rec[-1].loss_mask) if m]) == "ijklmno "
    cont = tasks.reference_continuation(text, DEC, ENC, max_len=8, chat=True)
    tokens, loss, at = chat_stream("[INST] Text:", "Continue the previous text.", " [/INST] Text continuation:\n...",
                                   "hijklmn")
    assert len(cont) == 1 and stream(cont[0]) == (tokens, loss) and list(cont[0].insertions) == [at]
    assert list(cont[0].contexts[0]) == e("abcdefg") and cont[0].special == "cont"


def test_long_context_is_format_for_chat_with_every_chunk_after_the_head():
    s = tasks.long_context("x" * 10, "Story:\n||Answer the question.||Answer:\n", "ok", DEC, ENC,
                           chunk_len=4, max_chunks=32)
    tokens, loss, at = chat_stream("[INST] Story:", "Answer the question.", " [/INST] Answer:\n", "ok")
    assert stream(s) == (tokens, loss)
    assert list(s.insertions) == [at, 0, 0] and [list(c) for c in s.contexts] == [e("xxxx"), e("xxxx"), e("xx")]
    assert s.special is None


def test_long_context_instruction_without_separators_is_the_instruction_alone():
    s = tasks.long_context("x" * 3, "Summarise.", "ok", DEC, ENC, chunk_len=4)
    assert stream(s)[0] == [B] + d("[INST]") + d("Summarise.") + d(" [/INST] ok ") + [E]
    with pytest.raises(tasks.SkipRecord, match="two '\\|\\|'"):
        tasks.long_context("x", "a||b", "ok", DEC, ENC)


# --- evaluation prompts -----------------------------------------------------------------------------

def test_evaluation_prompt_is_create_prompt_prefix_then_create_prompt():
    """Two shots and the question: "Document: " <C> "\\nQuestion: q0\\nAnswer: a0\\n\\nDocument: " <C>
    "\\nQuestion: q1\\nAnswer: a1\\n\\n" + "Document: " <C> "\\nQuestion: q\\nAnswer:"."""
    shots = [prompts.QA("q0", "a0", prompts.Block("doc0", 0)), prompts.QA("q1", "a1", prompts.Block("doc1", 1))]
    target = prompts.QA("q", None, prompts.Block("doc", 2))
    runs = prompts.text_runs(prompts.few_shot(shots, target))
    assert runs == ["Document: ", shots[0].document, "\nQuestion: q0\nAnswer: a0\n\nDocument: ", shots[1].document,
                    "\nQuestion: q1\nAnswer: a1\n\nDocument: ", target.document, "\nQuestion: q\nAnswer:"]
    assert prompts.render_text(prompts.few_shot(shots, target)) == (
        "Document: doc0\nQuestion: q0\nAnswer: a0\n\nDocument: doc1\nQuestion: q1\nAnswer: a1\n\n"
        "Document: doc\nQuestion: q\nAnswer:")  # the open-book prompt (create_prompt, wdoc)
    closed = prompts.few_shot([prompts.QA("q0", "a0")], prompts.QA("q"))
    assert prompts.render_text(closed) == "Question: q0\nAnswer: a0\n\nQuestion: q\nAnswer:"


# --- arc_jax's earlier layout (data.layout / eval --protocol arc_jax "arc_jax") -------------------------

def test_arc_jax_few_shot_layout_is_the_earlier_one():
    """"Document:" without space, each piece its own tokenizer call, " answer" + EOS trained."""
    s = tasks.few_shot([record(0), record(1)], np.random.default_rng(0), DEC, ENC, layout="arc_jax")
    tokens, loss = stream(s)
    first, shot = [B] + d("Document:"), d("\nQuestion: q0?\nAnswer:") + d(" a0") + d("\n\nDocument:")
    assert tokens == first + shot + d("\nQuestion: q1?\nAnswer:") + d(" a1") + [E]
    assert list(s.insertions) == [len(first), len(shot)] and sum(loss) == len(" a1") + 1
    shots = [prompts.QA("who?", "Ann", prompts.Block("doc one", 0))]
    target = prompts.QA("when?", None, prompts.Block("doc three", 2))
    pieces = prompts.few_shot(shots, target, layout="arc_jax")
    assert [p if isinstance(p, str) else p.text for p in prompts.text_runs(pieces)] == [
        "Document:", "doc one", "\nQuestion: who?\nAnswer:", " Ann", "\n\nDocument:", "doc three",
        "\nQuestion: when?\nAnswer:"]
    assert prompts.render_text(pieces) == ("Document: doc one\nQuestion: who?\nAnswer: Ann\n\n"
                                           "Document: doc three\nQuestion: when?\nAnswer:")
