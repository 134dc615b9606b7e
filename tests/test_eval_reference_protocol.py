"""`arc-jax eval --protocol reference`: the reference's evaluation (kyutai-labs/ARC-Encoder,
embed_llm/generation/eval_context_comp.py, eval_context_comp_baselines.py, utils.py), pinned by
hand-checked examples; prediction records in the `data show --json` format; resuming a killed run."""

import json
import math

import pytest
from test_eval_harness import FakePipeline, qa, write_jsonl

from arc_jax.errors import DataError
from arc_jax.evaluation import harness


def test_shot_order_is_the_references_fixed_shuffle():
    """random.shuffle(c, random=lambda: 0.42) on 5 records, by hand: i=4 swaps with floor(0.42*5)=2,
    i=3 with floor(1.68)=1, i=2 with floor(1.26)=1, i=1 with floor(0.84)=0."""
    assert harness.reference_order(5) == [4, 0, 3, 1, 2]
    # evaluate_QA: the first 2 are the shots, the rest evaluated in reverse; evaluate_trad keeps order
    assert harness.reference_split(5, 2, "qa", None) == ([4, 0], [2, 1, 3])
    assert harness.reference_split(5, 2, "translation", None) == ([4, 0], [3, 1, 2])
    assert harness.reference_split(5, 2, "qa", 2) == ([4, 0], [2, 1])  # --n_samples
    assert harness.reference_split(5, 0, "long_context", None) == ([], [0, 1, 2, 3, 4])  # file order
    assert harness.reference_split(5, 0, "long_context", 2) == ([], [4, 0])  # shuffled, the first n_samples
    _, evaluated = harness.reference_split(1200, 5, "summarization", None)
    assert len(evaluated) == 1000  # evaluate_QA caps CNN at 1000 records
    with pytest.raises(DataError, match="need at least one record beyond the shots"):
        harness.reference_split(5, 5, "qa", None)


@pytest.mark.parametrize("generated, answer", [
    ("Paris\nFrance\n\nQuestion: next", "Paris\nFrance"),  # a single newline does not end the answer
    ("  Paris  \n\n", "Paris"),
    ("\n\nParis", ""),  # an empty first part stays empty (evaluate_trad's rule keeps the stripped whole: "")
    ("Paris", "Paris"),
])
def test_answer_is_the_text_before_the_first_blank_line(generated, answer):
    """augmented_model.py generate with truncate_line=True: text.split("\\n\\n")[0].strip()."""
    assert harness.first_paragraph(generated) == answer
    assert harness.first_line("Paris\nFrance") == "Paris"  # the arc_jax protocol's cut


def test_decoding_stops_only_at_tokens_that_open_a_blank_line():
    class Tok:
        eos_id, vocab_size = 0, 5
        texts = ["</s>", "\n", "\n\nQ", "a\n\nb", "x"]

        def decode(self, ids):
            return "".join(self.texts[i] for i in ids)

    assert harness.stop_ids(Tok(), "\n\n") == [0, 2]
    assert harness.newline_stop_ids(Tok()) == [0, 1, 2]


def test_reference_prompts_for_each_mode():
    """create_prompt_prefix + create_prompt; the closed-book baseline (eval_context_comp_baselines.py,
    no context) keeps the shots' documents and appends "\\nQuestion: q\\nAnswer:" after their "\\n\\n"."""
    shot = (0, harness.Example("q0", ("a0",), "d0", 1))
    target = (1, harness.Example("q", ("a",), "d", 2))
    closed = harness.few_shot_template([shot], target, with_documents=False, shot_documents=True)
    assert harness.render_text(closed) == "Document: d0\nQuestion: q0\nAnswer: a0\n\n\nQuestion: q\nAnswer:"
    opened = harness.few_shot_template([shot], target, with_documents=True)
    assert harness.render_text(opened) == "Document: d0\nQuestion: q0\nAnswer: a0\n\nDocument: d\nQuestion: q\nAnswer:"


def evaluate(tmp_path, pipe, out=None, **kw):
    path = tmp_path / "qa.jsonl"
    if not path.exists():
        write_jsonl(path, [qa(i) for i in range(11)])
    return harness.evaluate(pipe, [str(path)], ["closed_book", "compressed"], out, shots=2, batch_size=3,
                            progress=False, **kw)


def test_prediction_records_hold_the_prompt_as_the_decoder_read_it(tmp_path):
    replies = {f"q{i}?": f"answer {i}" for i in range(11)}
    result = evaluate(tmp_path, FakePipeline(replies, sep="\n\n"), tmp_path / "out")
    bench = result["benchmarks"]["qa"]
    assert bench["max_new_tokens"] == 64 and bench["n"] == 9
    assert bench["modes"]["compressed"]["metrics"]["em"] == 100.0  # cut at the blank line, not before
    records = [json.loads(line) for line in (tmp_path / "out/predictions/qa.compressed.jsonl").read_text().splitlines()]
    order = harness.reference_order(11)
    assert [r["line"] for r in records] == [i + 1 for i in order[2:][::-1]]
    r = records[0]
    assert set(r) >= {"line", "question", "prompt", "generation", "prediction", "answers", "metrics"}
    assert r["generation"] == f"{r['prediction']}\n\nQuestion: next one"
    # the reference's QA metrics, per record; the document ("d4w0 ...") does not hold the answer
    assert r["metrics"] == {"em": 100.0, "approx_em": 100.0, "xrag": 100.0, "context_has_answer": 0.0, "f1": 100.0}
    kinds = ["text" if "loss" in p else "compressed" if "compressed" in p else "special" for p in r["prompt"]]
    assert kinds == ["text", "compressed", "special"] * 3 + ["text"]
    # (the test tokenizer splits on spaces: its decoded text keeps none at the ends)
    assert r["prompt"][0] == {"text": "<bos>Document:", "loss": False}
    shot_doc = qa(order[0])["passages"][0]
    assert r["prompt"][1] == {"compressed": len(shot_doc.split()) // 4, "text": shot_doc}
    assert r["prompt"][2] == {"special": "cont"} and r["prompt"][-1]["text"].rstrip().endswith("Answer:")
    closed = json.loads((tmp_path / "out/predictions/qa.closed_book.jsonl").read_text().splitlines()[0])
    assert len(closed["prompt"]) == 1 and "\n\n\nQuestion: " in closed["prompt"][0]["text"]


def test_a_killed_evaluation_resumes_where_it_stopped(tmp_path):
    replies = {f"q{i}?": f"answer {i}" for i in range(11)}
    whole = evaluate(tmp_path, FakePipeline(replies, sep="\n\n"), tmp_path / "whole")
    killed = FakePipeline(replies, sep="\n\n", fail_after=2 * 3 + 1)  # 2 batches of 3 prompts, then 1 more call
    with pytest.raises(KeyboardInterrupt):
        evaluate(tmp_path, killed, tmp_path / "resumed")
    resumed_pipe = FakePipeline(replies, sep="\n\n")
    resumed = evaluate(tmp_path, resumed_pipe, tmp_path / "resumed")
    assert resumed == whole
    assert len(resumed_pipe.prompts) == 2 * (9 - 3)  # 2 modes: the first batch of 3 was done
    for name in ("results.json", "predictions/qa.compressed.jsonl", "predictions/qa.closed_book.jsonl"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    again = FakePipeline(replies, sep="\n\n")
    assert evaluate(tmp_path, again, tmp_path / "resumed") == whole and again.prompts == []  # nothing left
    with pytest.raises(DataError, match=r"holds an evaluation with other settings \(shots: 2 -> 3"):
        harness.evaluate(again, [str(tmp_path / "qa.jsonl")], ["closed_book", "compressed"], tmp_path / "resumed",
                         shots=3, batch_size=3, progress=False)
    assert math.isfinite(json.loads((tmp_path / "resumed/timing.json").read_text())["qa/compressed"])


def test_translation_prompt_is_evaluate_trads():
    """evaluate_trad: "Document: " <C> "\\nQuestion: Translate the previous document into Spanish.\\nAnswer:
    {translation}\\n\\nDocument: " ... <C> "\\nQuestion: Translate the previous document into Spanish.\\nAnswer:"."""
    bench = harness.Benchmark("f.jsonl", "translation", language="Spanish")
    shot = harness.example_from_record({"passage": " Hello. ", "answer": " Hola. "}, bench, 1, True)
    target = harness.example_from_record({"passage": "Bye.", "answer": "Adiós."}, bench, 2, True)
    pieces = harness.few_shot_template([(0, shot)], (1, target), with_documents=True)
    question = "\nQuestion: Translate the previous document into Spanish.\nAnswer:"
    assert [p if isinstance(p, str) else p.text for p in harness.prompts.text_runs(pieces)] == [
        "Document: ", "Hello.", question + " Hola.\n\nDocument: ", "Bye.", question]


# --- Long context (embed_llm/generation/long_context/eval_downstream.py TestItem, eval_long_context.py) ---

STORY = {"passage": "Once upon a time.", "instruction": "Read the story.\n\n", "question": "Who?", "answers": ["A"]}


def long_example(record=STORY, name="narrativeqa_validation.jsonl"):
    bench = harness.parse_benchmark(f"{name}:long_context")
    return bench, harness.example_from_record(record, bench, 1, True)


def test_long_context_records_keep_instruction_and_question_and_the_dataset_template():
    bench, ex = long_example()
    assert bench.template == "NQA" and (ex.instruction, ex.query) == ("Read the story.", "Who?")
    assert harness.parse_benchmark("x.jsonl:long_context:QMSum").template == "QMSum"
    with pytest.raises(ValueError, match="unknown long-context template 'NOPE'"):
        harness.parse_benchmark("x.jsonl:long_context:NOPE")


def test_long_context_compressed_prompt_is_get_text_through_format_for_chat():
    """instruct = "Story:\\n" || "{instruction}Question:\\n{question}" || "Answer:\\n"; format_for_chat
    (generation): ("[INST] " + prefix).strip(), the chunks, the instruction stripped, then
    " [/INST] " + suffix."""
    bench, ex = long_example({**STORY, "instruction": "Read the story.\n\n"})
    ex = harness.Example(ex.question, ex.answers, ex.document, 1, "Read the story.\n\n", "Who?")  # unstripped, as read
    runs = harness.prompts.text_runs(harness.long_context_template((0, ex), True, "NQA"))
    assert runs[0] == "[INST] Story:" and runs[1].text == "Once upon a time."
    assert runs[2] == "Read the story.\n\nQuestion:\nWho? [/INST] Answer:\n"
    report = harness.Example("q", ("s",), "Text.", 1, "Summarize the report.\n\n", None)
    runs = harness.prompts.text_runs(harness.long_context_template((0, report), True, "GvRp"))
    assert runs[0] == "[INST] Report:" and runs[2] == "Summarize the report. [/INST] Summary:\n"


def test_long_context_open_book_prompt_is_format_decoder_inputs_and_is_cut_from_the_front():
    """text = "Story:\\n" + doc + "\\n\\n" + query; over the window, the end of the text before the
    query is kept, then "... [The rest of the story is omitted]\\n\\n" and the query."""
    from test_eval_harness import WordTokenizer

    tok = WordTokenizer()
    ex = harness.Example("q", ("A",), " ".join(f"w{i}" for i in range(30)), 1, "Read.\n\n", "Who?")
    pieces = harness.long_context_template((0, ex), True, "NQA", compressed=False)
    query = "Read.\n\nQuestion:\nWho?\n\nAnswer:\n"
    assert harness.render_text(pieces) == "Story:\n" + ex.document + "\n\n" + query
    prompt = harness.realize(pieces, "open_book", tok, {}, target=0)
    tail = tok.encode("... [The rest of the story is omitted]\n\n" + query)
    limit = len(tail) + 6
    cut = harness.fit_window(prompt, tok, limit, "... [The rest of the story is omitted]\n\n", query)
    assert cut.prefill == limit and cut.pieces[0][-len(tail):] == tail
    # the end of the text before the query: the document's last words and its "\n\n" (two tokens here)
    assert tok.decode(cut.pieces[0][:6]) == "w26 w27 w28 w29\n\n"
    assert harness.fit_window(prompt, tok, 1000, "x", query) is prompt


def test_compressed_chunks_are_cut_to_the_room_left_in_the_window():
    import numpy as np

    blocks = [np.zeros((5, 2)), np.ones((5, 2))]  # 4 vectors + <Cont> each
    kept, texts = harness.cut_blocks(blocks, ["a", "b"], room=5, special=True)
    assert [len(b) for b in kept] == [5, 2] and texts == ["a", "b"] and kept[1][-1].tolist() == [1, 1]
    assert harness.cut_blocks(blocks, ["a", "b"], room=0, special=True) == ([], [])
