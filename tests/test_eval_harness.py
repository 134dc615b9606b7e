"""The evaluation harness: prompts built as the paper's few-shot format and the training tasks lay them out, fixed
shots that are never evaluated, truncation to the compressed length, metrics, ratios and prefill
counted by hand, result files, bad input with file:line, and one run on real (tiny) models."""

import dataclasses
import json
import re
import types

import numpy as np
import pytest

import arc_jax
import arc_jax.cli
from arc_jax.demo import synthetic
from arc_jax.data.bad_records import DataError
from arc_jax.data.tasks import QARecord, few_shot, long_context
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.evaluation import harness
from arc_jax import prompts
from arc_jax.evaluation.harness import Benchmark, Document, Example
from arc_jax.evaluation.metrics import score
from arc_jax.inference.generate import Compressed
from arc_jax.tools.roundtrip import random_params, tiny_configs


class WordTokenizer:
    """Words and newlines are the tokens, so every count can be checked by hand."""

    bos_id, eos_id = 1, 2

    def __init__(self):
        self.ids = {"<s>": 1, "</s>": 2}

    @property
    def vocab_size(self):
        return len(self.ids) + 1

    def encode(self, text):
        return [self.ids.setdefault(w, len(self.ids) + 1) for w in re.findall(r"\n|\S+", text)]

    def decode(self, ids):
        words = {i: w for w, i in self.ids.items()}
        out = ""
        for i in ids:
            if i in (self.bos_id, self.eos_id):
                continue
            w = words[i]
            out += w if w == "\n" or not out or out.endswith("\n") else " " + w
        return out


class FakePipeline:
    """Stands in for the models: a text of n tokens compresses into n // 4 + 1 vectors (the + 1 is
    <Cont>), and the answer to a prompt is looked up by the prompt's last question (or
    instruction), followed by a new line that the harness must cut."""

    def __init__(self, replies: dict[str, str], tokenizer=None, sep: str = "\n", fail_after: int | None = None):
        self.encoder_tokenizer = self.decoder_tokenizer = tokenizer or WordTokenizer()
        self.replies, self.sep, self.fail_after = replies, sep, fail_after
        self.decoder_index = 0
        self.prompts = []
        tok = self.encoder_tokenizer
        self.encoder = types.SimpleNamespace(
            config=types.SimpleNamespace(cont_tok=True),
            compress=lambda ids, decoder: [np.zeros((len(t) // 4 + 1, 8), np.float32) for t in ids])
        self.decoder = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=10**6))
        self._tok = tok

    def compress(self, texts):
        return [Compressed(np.zeros((len(self._tok.encode(t)) // 4 + 1, 8), np.float32), len(self._tok.encode(t)), 0)
                for t in texts]

    def generate_ids(self, prompts, max_new_tokens, temperature=0.0, stop_ids=(), vocab_limit=None):
        assert temperature == 0.0 and vocab_limit is not None
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        out = []
        for pieces in prompts:
            self.prompts.append(pieces)
            text = self.decoder_tokenizer.decode([t for p in pieces if not isinstance(p, np.ndarray) for t in p])
            last = re.split(r"Question: |\[INST\] ", text)[-1]
            key = last.split("\n")[0].replace(" [/INST]", "").strip()
            out.append(self.decoder_tokenizer.encode(self.replies.get(key, "no idea") + self.sep + "Question: next one"))
        return out


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def qa(i, doc_words=8):
    return {"question": f"q{i}?", "answer": [f"answer {i}", f"alt {i}"],
            "passages": [" ".join(f"d{i}w{j}" for j in range(doc_words)), "second passage"]}


EXAMPLES = [Example("who?", ("Ann",), "doc one", 3), Example("where?", ("Paris", "paris"), "doc two", 5),
            Example("when?", ("1900",), "doc three", 9)]


# --- Prompt templates, piece by piece ------------------------------------------------------------

def test_open_book_prompt_is_the_spec_template():
    pieces = harness.few_shot_template([(0, EXAMPLES[0]), (1, EXAMPLES[1])], (2, EXAMPLES[2]), with_documents=True)
    assert harness.render_text(pieces) == ("Document: doc one\nQuestion: who?\nAnswer: Ann\n\n"
                                           "Document: doc two\nQuestion: where?\nAnswer: Paris\n\n"
                                           "Document: doc three\nQuestion: when?\nAnswer:")


def test_closed_book_prompt_drops_the_document_lines():
    pieces = harness.few_shot_template([(0, EXAMPLES[0]), (1, EXAMPLES[1])], (2, EXAMPLES[2]), with_documents=False)
    assert harness.render_text(pieces) == ("Question: who?\nAnswer: Ann\n\n"
                                           "Question: where?\nAnswer: Paris\n\n"
                                           "Question: when?\nAnswer:")
    assert not any(isinstance(p, Document) for p in pieces)


def test_compressed_prompt_pieces_split_where_the_reference_splits():
    """create_prompt_prefix / create_prompt: each run of text between two blocks is one piece."""
    pieces = harness.few_shot_template([(0, EXAMPLES[0])], (2, EXAMPLES[2]), with_documents=True)
    runs = prompts.text_runs(pieces)
    assert runs == ["Document: ", Document("doc one", 0), "\nQuestion: who?\nAnswer: Ann\n\nDocument: ",
                    Document("doc three", 2), "\nQuestion: when?\nAnswer:"]
    tok = WordTokenizer()
    blocks = {0: [np.ones((2, 8), np.float32)], 2: [np.full((3, 8), 2.0, np.float32)]}
    prompt = harness.realize(pieces, "compressed", tok, blocks, target=2)
    expected = [[tok.bos_id], tok.encode(runs[0]), blocks[0][0], tok.encode(runs[2]), blocks[2][0], tok.encode(runs[4])]
    assert len(prompt.pieces) == len(expected)
    for got, want in zip(prompt.pieces, expected):
        assert got is want if isinstance(want, np.ndarray) else got == want


def test_zero_shot_prompt_is_the_target_alone():
    pieces = harness.few_shot_template([], (1, EXAMPLES[1]), with_documents=True)
    assert harness.render_text(pieces) == "Document: doc two\nQuestion: where?\nAnswer:"


def test_long_context_prompt_is_the_llama2_chat_template():
    target = (0, Example("What happens?", ("x",), "A long story.", 1))
    pieces = harness.long_context_template(target, with_documents=True)
    assert harness.render_text(pieces) == "[INST] A long story.\nWhat happens? [/INST] "
    assert harness.render_text(harness.long_context_template(target, False)) == "[INST] What happens? [/INST] "
    story = (0, Example("Story:\n||Answer the question.||Answer:\n", ("x",), "A long story.", 1))
    assert prompts.text_runs(harness.long_context_template(story, True)) == [
        "[INST] Story:", Document("A long story.", 0, sep=" "), "Answer the question. [/INST] Answer:\n"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    paths = synthetic.build_tiny_data(folder, n_entities=60, held_out=12)
    return paths, load_tokenizer(paths["tokenizer"])


def _runs(pieces):
    """Token runs between blocks and the insertion offsets of a realized prompt."""
    runs, insertions, since = [[]], [], 0
    for piece in pieces:
        if isinstance(piece, np.ndarray):
            insertions.append(since)
            runs.append([])
            since = 0
        else:
            runs[-1] += piece
            since += len(piece)
    return runs, insertions


def _sample_runs(sample):
    runs, start = [], 0
    for offset in sample.insertions:
        runs.append(list(sample.x[start: start + offset]))
        start += offset
    return runs + [list(sample.x[start:])]


def test_compressed_prompt_is_the_training_layout_of_tasks_few_shot(tiny_data):
    """The fine-tuning sample and the evaluation prompt share every piece up to the last question,
    which training ends with "\\nAnswer: " + answer and evaluation with "\\nAnswer:" (the reference's
    training and evaluation differ there)."""
    paths, tok = tiny_data
    records = [json.loads(line) for line in paths["qa_eval"].read_text().splitlines()[:3]]
    bench = Benchmark(str(paths["qa_eval"]))
    examples = [harness.example_from_record(r, bench, i + 1, True) for i, r in enumerate(records)]
    sample = few_shot([QARecord.from_json(r) for r in records], np.random.default_rng(0), tok, tok)
    blocks = {i: [np.zeros((len(c), 4), np.float32)] for i, c in enumerate(sample.contexts)}
    pieces = harness.few_shot_template([(0, examples[0]), (1, examples[1])], (2, examples[2]), True)
    runs, insertions = _runs(harness.realize(pieces, "compressed", tok, blocks, target=2).pieces)
    assert insertions == list(sample.insertions)
    trained = _sample_runs(sample)
    assert runs[:-1] == trained[:-1]
    assert runs[-1] == tok.encode(f"\nQuestion: {examples[2].question}\nAnswer:")
    assert tok.decode(trained[-1]).startswith(tok.decode(runs[-1]) + " ")


def test_long_context_prompt_is_the_training_layout_of_tasks_long_context(tiny_data):
    paths, tok = tiny_data
    text = json.loads(paths["pretrain"].read_text().splitlines()[0])["text"]
    sample = long_context(text, "Who is mentioned?", "someone", tok, tok, chunk_len=16, max_chunks=3)
    ex = Example("Who is mentioned?", ("someone",), harness.covered_text(text, tok, 16, 3), 1)
    chunks = harness.long_context_chunks(ex.document, tok, 16, 3)
    assert [tuple(c) for c in chunks] == list(sample.contexts)
    blocks = {0: [np.zeros((4, 4), np.float32) for _ in chunks]}
    prompt = harness.realize(harness.long_context_template((0, ex), True), "compressed", tok, blocks, target=0)
    runs, insertions = _runs(prompt.pieces)
    assert insertions == list(sample.insertions) and len(runs) == len(chunks) + 1 == 4
    trained = _sample_runs(sample)
    assert runs[:-1] == trained[:-1]  # BOS and "[INST]"; between the chunks nothing
    instruction = tok.encode("Who is mentioned?")
    assert runs[-1][: len(instruction)] == trained[-1][: len(instruction)] == instruction


def test_long_context_compression_drops_the_special_vector_and_cuts_at_max_chunks():
    pipe = FakePipeline({})
    text = " ".join(f"w{i}" for i in range(50))
    blocks = harness.compress_long_documents(pipe, [text], chunk_len=16, max_chunks=3)[0]
    assert [len(b) for b in blocks] == [16 // 4, 16 // 4, 16 // 4]  # 48 of 50 tokens, no <Cont> on any
    assert harness.covered_text(text, pipe.encoder_tokenizer, 16, 3) == " ".join(f"w{i}" for i in range(48))


def test_records_in_the_reference_field_variants():
    qa_bench, tr, summ = Benchmark("x.jsonl"), Benchmark("f.jsonl", "translation", language="German"), \
        Benchmark("c.jsonl", "summarization")
    ex = harness.example_from_record({"question": " q ", "answer": "a", "passage": " p "}, qa_bench, 4, True)
    assert ex == Example("q", ("a",), "p", 4)
    ex = harness.example_from_record({"question": "q", "answers": ["a", "b"], "passages": ["p1", "p2", "p3"]},
                                     qa_bench, 1, True, max_passages=2)
    assert ex.answers == ("a", "b") and ex.document == "p1\np2"
    ex = harness.example_from_record({"text": "Hello.", "translation": "Hallo.", "language": "Spanish"}, tr, 1, True)
    assert ex.question == "Translate the previous document into Spanish." and ex.answers == ("Hallo.",)
    ex = harness.example_from_record({"passage": "Hello.", "answer": "Hallo."}, tr, 1, True)
    assert ex.question == "Translate the previous document into German."
    ex = harness.example_from_record({"article": "Long news.", "summary": "News."}, summ, 1, True)
    assert ex.question == harness.SUMMARY_QUESTION and ex.document == "Long news."
    assert harness.example_from_record({"question": "q", "answer": "a"}, qa_bench, 1, False).document is None


def test_parse_benchmark_specs(tmp_path):
    assert harness.parse_benchmark("data/nq.jsonl") == Benchmark("data/nq.jsonl", "qa", "nq")
    assert harness.parse_benchmark("cnn.jsonl:summarization").kind == "summarization"
    b = harness.parse_benchmark("flores.jsonl:translation:Spanish")
    assert (b.path, b.kind, b.language, b.name) == ("flores.jsonl", "translation", "Spanish", "flores-Spanish")
    with pytest.raises(ValueError, match="unknown benchmark kind 'qaa'"):
        harness.parse_benchmark("nq.jsonl:qaa")


# --- Shots ---------------------------------------------------------------------------------------

def test_shots_are_fixed_deterministic_and_never_evaluated():
    shots, evaluated = harness.split_shots(40, 5, seed=3, max_examples=None)
    assert len(shots) == 5 and len(set(shots)) == 5
    assert sorted(shots + evaluated) == list(range(40)) and evaluated == sorted(evaluated)
    assert harness.split_shots(40, 5, seed=3, max_examples=None) == (shots, evaluated)
    assert harness.split_shots(40, 5, seed=4, max_examples=None)[0] != shots
    few = harness.split_shots(40, 5, seed=3, max_examples=7)
    assert few[0] == shots and len(few[1]) == 7 and not set(few[1]) & set(shots)


def test_every_prompt_of_a_run_holds_the_same_shots_and_never_its_own_record(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [qa(i) for i in range(12)])
    pipe = FakePipeline({})
    result = harness.evaluate(pipe, [str(path)], ["open_book"], protocol="arc_jax", shots=3, seed=1, progress=False)
    bench = result["benchmarks"]["qa"]
    shot_questions = [f"q{line - 1}?" for line in bench["shot_lines"]]
    assert bench["n"] == 9 and len(pipe.prompts) == 9
    for pieces in pipe.prompts:
        questions = re.findall(r"Question: (\S+)", pipe.decoder_tokenizer.decode(pieces[1]))
        assert questions[:3] == shot_questions and questions[3] not in shot_questions


# --- Truncation ----------------------------------------------------------------------------------

def test_truncated_documents_have_the_compressed_block_length(tiny_data):
    paths, tok = tiny_data
    docs = [json.loads(line)["passages"][0] for line in paths["qa_eval"].read_text().splitlines()[:12:6]]
    examples = [Example("q?", ("a",), d, 1) for d in docs]
    blocks = {0: [np.zeros((7, 4), np.float32)], 1: [np.zeros((5, 4), np.float32)]}
    pieces = harness.few_shot_template([(0, examples[0])], (1, examples[1]), True)
    prompt = harness.realize(pieces, "truncated", tok, blocks, target=1)
    cut0, cut1 = (tok.decode(tok.encode(d)[:n]) for d, n in ((docs[0], 7), (docs[1], 5)))
    assert len(tok.encode(cut0)) == 7 and len(tok.encode(cut1)) == 5
    expected = harness.render_text(pieces, lambda d: cut0 if d.key == 0 else cut1)
    assert prompt.pieces == [[tok.bos_id], tok.encode(expected)]
    assert prompt.document_slots == 5 and prompt.document_tokens == len(tok.encode(docs[1]))


# --- Metrics, ratios, prefill --------------------------------------------------------------------

def test_metrics_are_wired_per_benchmark_kind(tmp_path):
    qa_records = [qa(i) for i in range(6)]
    tr_records = [{"passage": f"source sentence number {i} here", "answer": f"la frase numero {i} aqui ahora",
                   "language": "Spanish"} for i in range(4)]
    sum_records = [{"text": f"article {i} " * 5, "summary": f"the summary of article {i}"} for i in range(4)]
    replies = {"q0?": "answer 0", "q1?": "Alt 1.", "q2?": "answer two", "q3?": "wrong", "q4?": "answer 4",
               "q5?": "answer 5", "Translate the previous document into Spanish.": "la frase numero 1 aqui ahora",
               harness.SUMMARY_QUESTION: "the summary of article 2"}
    files = [str(write_jsonl(tmp_path / "qa.jsonl", qa_records)) + ":qa",
             str(write_jsonl(tmp_path / "tr.jsonl", tr_records)) + ":translation",
             str(write_jsonl(tmp_path / "sum.jsonl", sum_records)) + ":summarization"]
    result = harness.evaluate(FakePipeline(replies), files, ["closed_book", "compressed"], protocol="arc_jax",
                              shots=1, seed=0, progress=False)
    for name, records, answers_of in (("qa", qa_records, lambda r: r["answer"]),
                                      ("tr", tr_records, lambda r: r["answer"]),
                                      ("sum", sum_records, lambda r: r["summary"])):
        bench = result["benchmarks"][name]
        shot_line = bench["shot_lines"][0]
        evaluated = [r for i, r in enumerate(records) if i + 1 != shot_line]
        key = {"qa": lambda r: r["question"], "tr": lambda r: "Translate the previous document into Spanish.",
               "sum": lambda r: harness.SUMMARY_QUESTION}[name]
        predictions = [replies.get(key(r), "no idea") for r in evaluated]
        for mode in ("closed_book", "compressed"):
            got = bench["modes"][mode]
            assert got["n"] == len(evaluated)
            expected = {m: score(m, predictions, [answers_of(r) for r in evaluated])
                        for m in harness.METRICS_BY_KIND[bench["kind"]]}
            assert got["metrics"] == pytest.approx(expected)
    qa_bench = result["benchmarks"]["qa"]
    shot = qa_bench["shot_lines"][0] - 1
    correct = sum(i != shot for i in (0, 1, 4, 5))  # "Alt 1." matches "alt 1" after normalisation
    assert qa_bench["modes"]["compressed"]["metrics"]["em"] == pytest.approx(100 * correct / 5)
    assert result["benchmarks"]["sum"]["modes"]["compressed"]["metrics"]["rougeL"] > 0


def test_compression_ratio_and_prefill_counted_by_hand(tmp_path):
    # Documents of 8 and 4 words; the fake compresses n tokens into n // 4 + 1 vectors: 3 and 2.
    records = [{"question": "who?", "answer": "x", "passage": "a b c d e f g h"},
               {"question": "who?", "answer": "x", "passage": "a b c d"}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    result = harness.evaluate(FakePipeline({}), [str(path)], list(harness.MODES), shots=0, progress=False)
    modes = result["benchmarks"]["qa"]["modes"]
    # BOS + "Document:" + document + "\n Question: who? \n Answer:" (5 tokens)
    assert modes["compressed"]["compression_ratio"] == pytest.approx((8 / 3 + 4 / 2) / 2)
    assert modes["compressed"]["prefill_tokens"] == pytest.approx(((1 + 1 + 3 + 5) + (1 + 1 + 2 + 5)) / 2)
    assert modes["truncated"]["compression_ratio"] == pytest.approx((8 / 3 + 4 / 2) / 2)
    assert modes["truncated"]["prefill_tokens"] == pytest.approx(((1 + 1 + 3 + 5) + (1 + 1 + 2 + 5)) / 2)
    assert modes["open_book"]["compression_ratio"] == 1.0
    assert modes["open_book"]["prefill_tokens"] == pytest.approx(((1 + 1 + 8 + 5) + (1 + 1 + 4 + 5)) / 2)
    assert modes["closed_book"]["compression_ratio"] is None
    assert modes["closed_book"]["prefill_tokens"] == 1 + 4  # BOS + "Question: who? \n Answer:"


def test_answer_is_the_first_line_stripped():
    assert harness.first_line("  Paris \nQuestion: next") == "Paris"
    assert harness.first_line("\nParis") == ""
    assert harness.first_line(" 42") == "42"


def test_stop_ids_are_eos_and_tokens_that_open_a_new_line(tiny_data):
    _, tok = tiny_data
    stops = harness.newline_stop_ids(tok)
    assert tok.eos_id in stops
    assert all(i == tok.eos_id or tok.decode([i]).startswith("\n") for i in stops)
    newline = [i for i in tok.encode("a\nb") if tok.decode([i]) == "\n"]
    assert newline and set(newline) <= set(stops)


# --- Result files --------------------------------------------------------------------------------

def test_results_json_and_markdown_hold_every_benchmark_and_mode(tmp_path):
    files = [str(write_jsonl(tmp_path / "one.jsonl", [qa(i) for i in range(5)])),
             str(write_jsonl(tmp_path / "two.jsonl", [qa(i) for i in range(7)])),
             str(write_jsonl(tmp_path / "long.jsonl", [{"text": "w " * 40, "question": f"q{i}?", "answers": ["x"]}
                                                       for i in range(3)])) + ":long_context"]
    out = tmp_path / "out"
    result = harness.evaluate(FakePipeline({"q1?": "answer 1"}), files, list(harness.MODES), out, shots=2,
                              batch_size=2, chunk_len=16, max_chunks=2, progress=False)
    assert json.loads((out / "results.json").read_text()) == result
    table = (out / "results.md").read_text()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0]]
    assert header == ["benchmark", "kind", "mode", "EM", "approx. EM", "xRAG", "answer in context", "F1", "ROUGE-L",
                      "n", "ratio", "prefill tokens"]  # the reference's QA and long-context metrics
    body = {(r[0].strip(), r[2].strip()): [c.strip() for c in r] for r in rows[1:] if len(r) == len(header)}
    for name, n in (("one", 3), ("two", 5), ("long", 3)):
        for mode in harness.MODES:
            r = result["benchmarks"][name]["modes"][mode]
            assert r["n"] == n
            for value in r["metrics"].values():
                assert isinstance(value, float) and 0.0 <= value <= 100.0
            assert r["prefill_tokens"] > 0 and (r["compression_ratio"] is None) == (mode == "closed_book")
            row = body[(name, mode)]
            n_at = header.index("n")
            assert int(row[n_at]) == n and float(row[n_at + 2]) == pytest.approx(r["prefill_tokens"], abs=0.05)
            assert row[n_at + 1] == "-" if mode == "closed_book" else float(row[n_at + 1]) > 0
            lines = (out / "predictions" / f"{name}.{mode}.jsonl").read_text().splitlines()
            assert len(lines) == n and {"line", "prediction", "answers"} <= set(json.loads(lines[0]))
    assert result["benchmarks"]["long"]["shot_lines"] == []  # long context is zero-shot
    assert "| compressed |" in table.split("Mean of the main metric")[1]


# --- Bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line, reason", [
    ("{not json", "malformed JSON"),
    ('["a list"]', "not a JSON object"),
    ('{"question": "q", "passage": "p"}', "missing field 'answers' or 'answer'"),
    ('{"question": "q", "answer": 3, "passage": "p"}', "field 'answer' is number, expected string or array"),
    ('{"question": "q", "answer": "  ", "passage": "p"}', "empty field 'answer'"),
    ('{"question": ["q"], "answer": "a", "passage": "p"}', "field 'question' is array, expected string"),
    ('{"question": "q", "answer": "a"}', "missing field 'passages' or 'passage'"),
])
def test_a_malformed_record_is_reported_with_file_and_line(tmp_path, line, reason):
    good = json.dumps(qa(0))
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:4: {reason}")):
        harness.evaluate(FakePipeline({}), [str(path)], ["open_book"], shots=1, progress=False)


def test_a_translation_record_without_language_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "tr.jsonl", [{"text": "a", "answer": "b"}])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: no target language")):
        harness.load_examples(Benchmark(str(path), "translation"))


@pytest.mark.parametrize("protocol", ["arc_jax", "reference"])
def test_closed_book_needs_no_document(tmp_path, protocol):
    """(Records without passages, as `data prepare nq` writes them without retrieval: the reference's
    closed-book shots keep their documents only when they have some.)"""
    path = write_jsonl(tmp_path / "nq.jsonl", [{"question": f"q{i}?", "answer": "a"} for i in range(3)])
    pipe = FakePipeline({})
    result = harness.evaluate(pipe, [str(path)], ["closed_book"], protocol=protocol, shots=1, progress=False)
    assert result["benchmarks"]["nq"]["modes"]["closed_book"]["n"] == 2
    assert "Document" not in pipe.decoder_tokenizer.decode(pipe.prompts[0][1])


def test_an_empty_set_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}: empty file (no records)")):
        harness.evaluate(FakePipeline({}), [str(path)], ["closed_book"], progress=False)
    few = write_jsonl(tmp_path / "few.jsonl", [qa(i) for i in range(5)])
    with pytest.raises(DataError, match="5 record\\(s\\) but 5 shot\\(s\\)"):
        harness.evaluate(FakePipeline({}), [str(few)], ["closed_book"], shots=5, progress=False)
    with pytest.raises(DataError, match="no such file|cannot read"):
        harness.evaluate(FakePipeline({}), [str(tmp_path / "missing.jsonl")], ["closed_book"], progress=False)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="must be some of"):
        harness.evaluate(FakePipeline({}), ["x.jsonl"], ["compresed"], progress=False)


# --- One run on real models ----------------------------------------------------------------------

def test_end_to_end_on_tiny_models(tiny_data, tmp_path):
    paths, tok = tiny_data
    enc_cfg, dec_cfg = tiny_configs()
    dec_cfg = dataclasses.replace(dec_cfg, vocab_size=tok.vocab_size)
    enc_cfg = dataclasses.replace(enc_cfg, backbone=dataclasses.replace(enc_cfg.backbone, vocab_size=tok.vocab_size))
    enc_params, dec_params = random_params(enc_cfg, dec_cfg, seed=5)
    pipe = arc_jax.ARCPipeline(arc_jax.Encoder(enc_cfg, enc_params), arc_jax.DecoderLM(dec_cfg, dec_params),
                               decoder_index=1, encoder_tokenizer=tok, decoder_tokenizer=tok)
    texts = [json.loads(line)["text"] for line in paths["pretrain"].read_text().splitlines()[:2]]
    long_file = write_jsonl(tmp_path / "long.jsonl", [{"text": t, "question": "Who?", "answers": ["x"]} for t in texts])
    out = tmp_path / "out"
    result = harness.evaluate(pipe, [str(paths["qa_eval"]), f"{long_file}:long_context"], list(harness.MODES), out,
                              shots=2, max_examples=2, batch_size=2, max_new_tokens=3, chunk_len=32, max_chunks=2,
                              progress=False)
    qa_modes = result["benchmarks"]["qa_eval"]["modes"]
    assert set(qa_modes) == set(harness.MODES) and all(r["n"] == 2 for r in qa_modes.values())
    # pooling by 4 with <Cont>: the compressed prompt is shorter than the open-book one, the
    # truncated one reads as many slots per document as the compressed one
    assert qa_modes["compressed"]["prefill_tokens"] < qa_modes["open_book"]["prefill_tokens"]
    assert qa_modes["compressed"]["compression_ratio"] > 2.5
    assert qa_modes["truncated"]["prefill_tokens"] == pytest.approx(qa_modes["compressed"]["prefill_tokens"], rel=0.1)
    long_modes = result["benchmarks"]["long"]["modes"]
    assert long_modes["compressed"]["compression_ratio"] > 3  # no special vector: close to 4
    assert long_modes["compressed"]["prefill_tokens"] < long_modes["open_book"]["prefill_tokens"]
    assert (out / "results.md").read_text().count("| qa_eval |") == len(harness.MODES)


def test_cli_eval_writes_results_and_reports_bad_input_in_one_line(tiny_data, tmp_path, capsys):
    paths, tok = tiny_data
    enc_cfg, dec_cfg = tiny_configs()
    dec_cfg = dataclasses.replace(dec_cfg, vocab_size=tok.vocab_size)
    enc_cfg = dataclasses.replace(enc_cfg, backbone=dataclasses.replace(enc_cfg.backbone, vocab_size=tok.vocab_size))
    enc_params, dec_params = random_params(enc_cfg, dec_cfg, seed=5)
    arc_jax.Encoder(enc_cfg, enc_params).save(tmp_path / "enc")
    arc_jax.DecoderLM(dec_cfg, dec_params).save(tmp_path / "dec")
    args = ["eval", "--encoder", str(tmp_path / "enc"), "--decoder", str(tmp_path / "dec"),
            "--data", f"{paths['qa_eval']}:qa", "--modes", "closed_book,compressed", "--out", str(tmp_path / "out"),
            "--shots", "1", "--max-examples", "2", "--batch-size", "2", "--max-new-tokens", "2",
            "--encoder-tokenizer", str(paths["tokenizer"]), "--decoder-tokenizer", str(paths["tokenizer"])]
    assert arc_jax.cli.main(args) == 0
    assert "| qa_eval | qa | compressed |" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]["qa_eval"]["n"] == 2
    # The reference's --comp_rate: the same encoder compressing by 2 instead of 4 (no <Cont> here).
    halved = [*args[:10], str(tmp_path / "out2"), *args[11:], "--pooling-factor", "2"]
    assert arc_jax.cli.main(halved) == 0
    ratios = [json.loads((tmp_path / o / "results.json").read_text())["benchmarks"]["qa_eval"]["modes"]["compressed"]
              ["compression_ratio"] for o in ("out", "out2")]
    assert ratios[1] == pytest.approx(ratios[0] / 2, rel=0.15)
    capsys.readouterr()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}])
    for wrong, message in (([*args[:6], str(bad), *args[7:]], f"{bad}:1: missing field"),
                           ([*args[:8], "closed_book,compresed", *args[9:]], "must be some of"),
                           ([*args[:6], "x.jsonl:qaa", *args[7:]], "unknown benchmark kind"),
                           ([*args, "--pooling-factor", "0"], "--pooling-factor 0: needs a factor >= 1"),
                           ([*args, "--step", "3"], "--step 3: ")):
        assert arc_jax.cli.main(wrong) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("arc-jax eval: error: ") and message in err[0], err
