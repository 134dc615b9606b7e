"""`arc-jax data prepare`: each source's hub rows (small fixtures written here in the hub's schema, read
offline with --from) become the records the reference's load_datasets.ipynb writes, field by field.

The expected records are derived by hand from the notebook's cells (kyutai-labs/ARC-Encoder,
load_datasets.ipynb; cells counted from 0) and compared as the exact lines json.dumps writes. No test
uses the network, `datasets` or pyarrow (the parquet test is skipped without pyarrow).
"""

import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from arc_jax.cli import main
from arc_jax.data import prepare as prep


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(capsys, name, source, out, *extra):
    code = main(["data", "prepare", name, "--from", str(source), "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def dumped(records) -> list[str]:
    return [json.dumps(r) for r in records]


def no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# --- Evaluation sets ------------------------------------------------------------------------------

SQUAD_ROWS = [
    {"id": "1", "title": "Normans", "context": "The Normans were in Normandy. ",
     "question": "In what country is Normandy located?",
     "answers": {"text": ["France", "France", "France"], "answer_start": [159, 159, 159]}},
    {"id": "2", "title": "Normans", "context": "Rollo was a Viking leader.", "question": "Who was Rollo? ",
     "answers": {"text": ["a Viking leader", "Viking"], "answer_start": [10, 12]}},
    {"id": "3", "title": "Normans", "context": "No answer here.", "question": "Unanswerable?",
     "answers": {"text": [], "answer_start": []}},
]


def test_squad_first_answer_and_context_string(tmp_path, capsys):
    """Cell 2 (# SQUAD): {'question': q, 'answer': answers['text'][0], 'passages': context}, the context a
    string, nothing stripped. A hub layout folder: only the validation file of plain_text is read."""
    hub = tmp_path / "squad"
    write_jsonl(hub / "plain_text" / "validation-00000-of-00001.jsonl", SQUAD_ROWS)
    write_jsonl(hub / "plain_text" / "train-00000-of-00001.jsonl", [{"question": "never read"}])
    out = tmp_path / "data"
    printed = run(capsys, "squad", hub, out)
    assert lines(out / "raw" / "squad_validation.jsonl") == dumped([
        {"question": "In what country is Normandy located?", "answer": "France",
         "passages": "The Normans were in Normandy. "},
        {"question": "Who was Rollo? ", "answer": "a Viking leader", "passages": "Rollo was a Viking leader."},
    ])
    validation = hub / "plain_text" / "validation-00000-of-00001.jsonl"
    assert f"prepared squad: {out / 'raw' / 'squad_validation.jsonl'}: 2 records; 1 skipped" in printed
    assert f"  skipped {validation}:3: missing field 'answers.text.0'" in printed.splitlines()
    assert no_temp_files(out)


def test_squad_parquet_as_the_hub_serves_it(tmp_path, capsys):
    """Cell 2 again, from the hub's parquet file (pyarrow reads it when `datasets` is installed)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "plain_text" / "validation-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(SQUAD_ROWS[:2]), path)
    out = tmp_path / "data"
    printed = run(capsys, "squad", tmp_path / "plain_text", out)
    assert [json.loads(x)["answer"] for x in lines(out / "raw" / "squad_validation.jsonl")] == \
        ["France", "a Viking leader"]
    assert "2 records; 0 skipped" in printed


def test_cnn_constant_question_test_split_as_validation_file(tmp_path, capsys):
    """Cell 3 (# CNN/Dailymail): abisee/cnn_dailymail 1.0.0, split test, written to cnn_validation.jsonl with
    the fixed question, highlights as the answer and the article as "passages" (a string). A .json file
    holding an array of rows."""
    rows = [{"article": "LONDON (CNN) -- A long article.", "highlights": "Short.\nTwo lines.", "id": "a1"},
            {"article": "Another article.", "highlights": "", "id": "a2"}]
    source = tmp_path / "1.0.0" / "test-00000-of-00001.json"
    source.parent.mkdir()
    source.write_text(json.dumps(rows))
    out = tmp_path / "data"
    printed = run(capsys, "cnn", tmp_path / "1.0.0", out)
    assert lines(out / "raw" / "cnn_validation.jsonl") == dumped([
        {"question": "What is a very short summary of the above text?", "answer": "Short.\nTwo lines.",
         "passages": "LONDON (CNN) -- A long article."}])
    assert f"  skipped {source} item 2: empty field 'answer'" in printed.splitlines()


def test_hotpotqa_one_passage_per_paragraph(tmp_path, capsys):
    """Cell 4 (#HotpotQA): passages = [' '.join(sentences) for sentences in context['sentences']], titles
    dropped; HotpotQA's own [[title, sentences]] context is read the same way."""
    rows = [
        {"id": "h1", "question": "Which band?", "answer": "Oasis", "type": "bridge", "level": "easy",
         "supporting_facts": {"title": ["Oasis"], "sent_id": [0]},
         "context": {"title": ["Oasis", "Blur"],
                     "sentences": [["Oasis were a band.", " From Manchester."], ["Blur were a band."]]}},
        {"_id": "h2", "question": "Who?", "answer": "Damon",
         "context": [["Blur", ["Damon sang.", "Graham played."]], ["Gorillaz", ["A virtual band."]]]},
    ]
    source = write_jsonl(tmp_path / "distractor" / "validation.jsonl", rows)
    out = tmp_path / "data"
    run(capsys, "hotpotqa", source, out)
    assert lines(out / "raw" / "hotpotqa_validation.jsonl") == dumped([
        {"question": "Which band?", "answer": "Oasis",
         "passages": ["Oasis were a band.  From Manchester.", "Blur were a band."]},
        {"question": "Who?", "answer": "Damon", "passages": ["Damon sang. Graham played.", "A virtual band."]},
    ])


def test_nq_without_passages_writes_raw_and_says_so(tmp_path, capsys):
    """Cell 7 (#NQ): {'question', 'answer': answer[0]}; no passages in the input: raw/ only, one line."""
    source = write_jsonl(tmp_path / "nq_open" / "validation-00000-of-00001.jsonl", [
        {"question": "when was the eiffel tower built", "answer": ["1889", "1887-1889"]},
        {"question": "who wrote hamlet", "answer": ["Shakespeare"]},
        {"question": "no answer", "answer": []},
    ])
    out = tmp_path / "data"
    printed = run(capsys, "nq", source, out)
    assert lines(out / "raw" / "nq_validation.jsonl") == dumped([
        {"question": "when was the eiffel tower built", "answer": "1889"},
        {"question": "who wrote hamlet", "answer": "Shakespeare"}])
    assert not (out / "w_retrieved").exists()
    notes = [x for x in printed.splitlines() if "no retrieved passages" in x]
    assert len(notes) == 1 and "closed-book evaluation works" in notes[0]
    assert f"  skipped {source}:3: missing field 'answer.0'" in printed.splitlines()


def test_nq_with_user_passages_writes_w_retrieved(tmp_path, capsys):
    """Passages given in the input records go to w_retrieved/nq_validation.jsonl in the layout of the
    reference's retrieval/passage_retrieval.py (question, passages, answer, scores as strings); a record
    without passages stays in raw/ and is reported as left out of w_retrieved/. An already converted
    record (answer a string) is taken as it is."""
    source = write_jsonl(tmp_path / "nq_retrieved.jsonl", [
        {"question": "q1", "answer": ["a1", "b1"], "passages": ["P1 best", "P1 second"], "scores": [0.9, 0.5]},
        {"question": "q2", "answer": "a2", "passages": [{"title": "T", "text": "P2 as an Atlas chunk"}]},
        {"question": "q3", "answer": ["a3"]},
    ])
    out = tmp_path / "data"
    printed = run(capsys, "nq", source, out)
    assert lines(out / "raw" / "nq_validation.jsonl") == dumped([
        {"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}, {"question": "q3", "answer": "a3"}])
    assert lines(out / "w_retrieved" / "nq_validation.jsonl") == dumped([
        {"question": "q1", "passages": ["P1 best", "P1 second"], "answer": "a1", "scores": ["0.9", "0.5"]},
        {"question": "q2", "passages": ["P2 as an Atlas chunk"], "answer": "a2"}])
    assert "no retrieved passages" not in printed
    assert (f"  skipped {source}:3: no 'passages': left out of w_retrieved/nq_validation.jsonl (kept in the raw "
            "file)") in printed.splitlines()


def test_triviaqa_every_alias(tmp_path, capsys):
    """Cell 8 (#TRIVIAQA): mandarjoshi/trivia_qa unfiltered.nocontext, 'answer': answer['aliases'] (a list)."""
    source = write_jsonl(tmp_path / "validation-00000-of-00001.jsonl", [
        {"question": "Which planet is red?", "question_id": "tc_1", "question_source": "x",
         "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
         "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [],
                            "search_context": []},
         "answer": {"aliases": ["Mars", "Planet Mars", "mars"], "normalized_aliases": ["mars", "planet mars"],
                    "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                    "normalized_value": "mars", "type": "WikipediaEntity", "value": "Mars"}},
        {"question": "Broken", "answer": {"value": "x"}},
    ])
    out = tmp_path / "data"
    printed = run(capsys, "triviaqa", source, out)
    assert lines(out / "raw" / "triviaqa_validation.jsonl") == dumped([
        {"question": "Which planet is red?", "answer": ["Mars", "Planet Mars", "mars"]}])
    assert f"  skipped {source}:2: missing field 'answer.aliases'" in printed.splitlines()


FLORES = {"eng_Latn": ["Hello world.", "Second sentence."], "spa_Latn": ["Hola mundo.", "Segunda frase."],
          "fra_Latn": ["Bonjour le monde.", "Deuxième phrase."], "deu_Latn": ["Hallo Welt.", "Zweiter Satz."],
          "dan_Latn": ["Hej verden.", "Anden sætning."], "ita_Latn": ["Ciao mondo.", "Seconda frase."]}


def check_flores(out: Path, only: bool = True):
    """Cell 5 (# Load Flores): one file per language of TRAD_DATA_PATH, line-aligned; {"text": sentence}, the
    field the reference's evaluation reads (the cell itself dumps the bare string); and the English ->
    target pair files for `arc-jax eval FILE:translation`."""
    for code in prep.FLORES_LANGUAGES:
        assert lines(out / "flores" / f"{code}.jsonl") == dumped([{"text": s} for s in FLORES[code]])
    assert lines(out / "flores" / "eng_Latn-spa_Latn.jsonl") == dumped([
        {"passage": "Hello world.", "answer": "Hola mundo.", "language": "Spanish"},
        {"passage": "Second sentence.", "answer": "Segunda frase.", "language": "Spanish"}])
    assert json.loads(lines(out / "flores" / "eng_Latn-dan_Latn.jsonl")[1]) == \
        {"passage": "Second sentence.", "answer": "Anden sætning.", "language": "Danish"}
    if only:
        assert sorted(p.name for p in (out / "flores").iterdir()) == sorted(Path(p).name for p in prep._FLORES_OUTPUTS)


def write_flores_release(root: Path) -> Path:
    for split in ("dev", "devtest"):
        for code, sentences in FLORES.items():
            path = root / "flores200_dataset" / split / f"{code}.{split}"
            path.parent.mkdir(parents=True, exist_ok=True)
            text = sentences if split == "dev" else ["devtest " + s for s in sentences]
            path.write_text("".join(s + "\n" for s in text), encoding="utf-8")
    return root / "flores200_dataset"


def test_flores_from_the_release_folder(tmp_path, capsys):
    release = write_flores_release(tmp_path / "release")
    out = tmp_path / "data"
    printed = run(capsys, "flores", release, out)
    check_flores(out)
    assert f"{out / 'flores' / 'eng_Latn.jsonl'}: 2 records" in printed


def test_flores_from_the_release_tarball_and_other_split(tmp_path, capsys):
    release = write_flores_release(tmp_path / "release")
    tarball = tmp_path / "flores200_dataset.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(release, arcname="flores200_dataset")
    out = tmp_path / "data"
    run(capsys, "flores", tarball, out)
    check_flores(out)
    run(capsys, "flores", tarball, out, "--split", "devtest")
    assert lines(out / "flores" / "spa_Latn_devtest.jsonl") == dumped(
        [{"text": "devtest " + s} for s in FLORES["spa_Latn"]])
    check_flores(out, only=False)  # the dev files are untouched


def test_flores_from_rows_of_the_all_config(tmp_path, capsys):
    """facebook/flores 'all' rows: one column sentence_<code> per language."""
    rows = [{"id": i + 1, "URL": "u", "domain": "d", "topic": "t", "has_image": 0, "has_hyperlink": 0,
             **{f"sentence_{c}": FLORES[c][i] for c in FLORES}} for i in range(2)]
    source = write_jsonl(tmp_path / "all" / "dev.jsonl", rows)
    out = tmp_path / "data"
    run(capsys, "flores", source, out)
    check_flores(out)


def test_narrativeqa_document_text_and_every_answer(tmp_path, capsys):
    """Cell 16 (# NQA): passage = document['text'], answer = [a['text'] for a in answers], question =
    question['text'], and the NarrativeQA instruction."""
    row = {"document": {"id": "d1", "kind": "gutenberg", "url": "u", "file_size": 1, "word_count": 3,
                        "start": "s", "end": "e", "summary": {"text": "sum", "tokens": ["sum"], "url": "u",
                                                             "title": "T"},
                        "text": "  Once upon a time.\n\nThe end.  "},
           "question": {"text": "Who was there?", "tokens": ["Who", "was", "there", "?"]},
           "answers": [{"text": "Nobody", "tokens": ["Nobody"]}, {"text": "no one", "tokens": ["no", "one"]}]}
    source = write_jsonl(tmp_path / "data" / "validation-00000-of-00001.jsonl", [row])
    out = tmp_path / "out"
    run(capsys, "narrativeqa", source, out)
    assert lines(out / "long_context" / "narrativeqa_validation.jsonl") == dumped([{
        "passage": "  Once upon a time.\n\nThe end.  ", "answer": ["Nobody", "no one"], "question": "Who was there?",
        "instruction": "You are given a story, which can be either a novel or a movie script, and a question. "
                       "Answer the question as concisely as you can, using a single phrase if possible.\n\n"}])


def write_scrolls_zip(path: Path, config: str, validation_rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for split, rows in (("train", [{"id": "t", "pid": "t", "input": "never\n\nread", "output": "x"}]),
                            ("validation", validation_rows), ("test", [])):
            z.writestr(f"{config}/{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_qasper_from_the_scrolls_zip(tmp_path, capsys):
    """Cell 16 (# QASPER): tau/scrolls qasper, one record per row: passage = input after the first blank
    line, stripped; question = input before it, stripped; answer = output; the Qasper instruction. A row
    with no blank line is skipped (the cell's str.index would raise)."""
    archive = write_scrolls_zip(tmp_path / "qasper.zip", "qasper", [
        {"id": "q1", "pid": "q1_0", "input": " What is X? \n\nTitle\n\nAbstract: X is Y. \n", "output": "Y"},
        {"id": "q1", "pid": "q1_1", "input": " What is X? \n\nTitle\n\nAbstract: X is Y. \n", "output": "unanswerable"},
        {"id": "q2", "pid": "q2_0", "input": "No blank line here", "output": "z"},
    ])
    out = tmp_path / "data"
    printed = run(capsys, "qasper", archive, out)
    instruction = prep.QASPER_INSTRUCTION
    assert instruction.startswith("You are given a scientific article and a question.") and \
        instruction.endswith('answer "yes", "no", or "unanswerable".\n\n')
    assert lines(out / "long_context" / "qasper_validation.jsonl") == dumped([
        {"passage": "Title\n\nAbstract: X is Y.", "answer": "Y", "question": "What is X?", "instruction": instruction},
        {"passage": "Title\n\nAbstract: X is Y.", "answer": "unanswerable", "question": "What is X?",
         "instruction": instruction}])
    assert (f"  skipped {archive}/qasper/validation.jsonl:3: field 'input' has no blank line between the query "
            "and the document") in printed.splitlines()


def test_qmsum_question_is_the_first_line(tmp_path, capsys):
    """Cell 16 (# QMSUM): question = input.split('\\n')[0].strip() (the first line, not up to the blank
    line), passage = input after the first blank line, stripped. A hub snapshot folder holding both
    SCROLLS zips: the qmsum one is read."""
    write_scrolls_zip(tmp_path / "scrolls" / "qasper.zip", "qasper", [
        {"id": "x", "pid": "x", "input": "wrong\n\nzip", "output": "no"}])
    write_scrolls_zip(tmp_path / "scrolls" / "qmsum.zip", "qmsum", [
        {"id": "m1", "pid": "m1", "input": " Summarize the meeting. \nsecond line\n\nA: hello\nB: bye\n",
         "output": "They greeted."}])
    out = tmp_path / "data"
    run(capsys, "qmsum", tmp_path / "scrolls", out)
    assert lines(out / "long_context" / "qmsum_validation.jsonl") == dumped([{
        "passage": "A: hello\nB: bye", "answer": "They greeted.", "question": "Summarize the meeting.",
        "instruction": "You are given a meeting transcript and a query containing a question or instruction. "
                       "Answer the query in one or more sentences.\n\n"}])


def test_govreport_report_and_summary(tmp_path, capsys):
    """Cell 16 (# GovReport): passage = report, answer = summary, the instruction, no question."""
    source = write_jsonl(tmp_path / "validation.jsonl", [{"id": "g", "report": "The report.", "summary": "Sum."}])
    out = tmp_path / "data"
    run(capsys, "govreport", source, out)
    assert lines(out / "long_context" / "govreport_validation.jsonl") == dumped([{
        "passage": "The report.", "answer": "Sum.",
        "instruction": "Instruction: You are given a report by a government agency. Write a one-page summary "
                       "of the report.\n"}])


def test_split_and_max_records(tmp_path, capsys):
    """--split picks the split's files and names the output after it; --max-records stops early."""
    hub = tmp_path / "squad"
    write_jsonl(hub / "plain_text" / "validation-00000-of-00001.jsonl", SQUAD_ROWS)
    write_jsonl(hub / "plain_text" / "train-00000-of-00001.jsonl", SQUAD_ROWS[:2])
    out = tmp_path / "data"
    run(capsys, "squad", hub, out, "--split", "train", "--max-records", "1")
    assert lines(out / "raw" / "squad_train.jsonl") == dumped([
        {"question": "In what country is Normandy located?", "answer": "France",
         "passages": "The Normans were in Normandy. "}])
    assert not (out / "raw" / "squad_validation.jsonl").exists()


# --- The released fine-tuning set -----------------------------------------------------------------

def test_arc_finetuning_archive_lines_kept_verbatim(tmp_path, capsys):
    """Cell 11: the released ARC-Encoder_ft.zip, its jsonl files written flat (as the reference's
    fine-tuning yaml reads them from DATA_PATH). Lines in the fields of embed_llm/data/tokenize.py
    (answer a string or a list, passage or passages, optional question and instruction) are kept byte
    for byte; others are skipped with file:line; the mixture's files missing from the archive are named."""
    good = [
        {"question": "Who?", "answer": ["Ann", "Anna"], "passages": ["Ann came.", "Later."]},
        {"passage": "Texte \u00e9crit.", "question": "Translate.", "answer": "Written text.", "instruction": "i"},
        {"question": "What?", "answer": "it", "passage": "It is."},
    ]
    content = (json.dumps(good[0]) + "\n" + json.dumps(good[1], ensure_ascii=False) + "\n\n{broken\n"
               + json.dumps({"question": "no passage", "answer": "x"}) + "\n" + json.dumps(good[2]) + "\n")
    archive = tmp_path / "ARC-Encoder_ft.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ARC-Encoder_ft/adversarialqa.jsonl", content)
        z.writestr("ARC-Encoder_ft/sciq.jsonl", json.dumps(good[2]) + "\n")
        z.writestr("__MACOSX/ARC-Encoder_ft/._sciq.jsonl", "junk")
        z.writestr("ARC-Encoder_ft/README.txt", "not data")
    out = tmp_path / "finetune"
    printed = run(capsys, "arc_finetuning", archive, out)
    assert sorted(p.name for p in out.iterdir()) == ["adversarialqa.jsonl", "sciq.jsonl"]
    kept = content.splitlines()
    assert lines(out / "adversarialqa.jsonl") == [kept[0], kept[1], kept[5]]
    assert lines(out / "sciq.jsonl") == [json.dumps(good[2])]
    member = f"{archive}/ARC-Encoder_ft/adversarialqa.jsonl"
    assert f"  skipped {member}:4: malformed JSON" in printed.splitlines()
    assert f"  skipped {member}:5: missing field 'passage' or 'passages'" in printed.splitlines()
    assert "not in" in printed and "freebaseqa.jsonl" in printed and "adversarialqa.jsonl," not in printed
    assert "prepared arc_finetuning:" in printed and "adversarialqa.jsonl: 3 records" in printed


# --- Failures -------------------------------------------------------------------------------------

def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.err, captured.err
    return err[0]


def test_unknown_name_and_missing_from_are_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["data", "prepare", "nope", "--out", str(tmp_path / "o")])
    assert err.startswith("arc-jax data: error: unknown dataset 'nope'; known: arc_finetuning, nq, triviaqa")
    err = one_line_error(capsys, ["data", "prepare", "squad", "--from", str(tmp_path / "missing"),
                                  "--out", str(tmp_path / "o")])
    assert err == f"arc-jax data: error: {tmp_path / 'missing'}: no such file or folder"
    assert not (tmp_path / "o").exists()


def test_download_without_datasets_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    for name in ("squad", "qasper", "arc_finetuning"):
        err = one_line_error(capsys, ["data", "prepare", name, "--out", str(tmp_path / "o")])
        assert "pip install 'arc-jax[prepare]'" in err and err.startswith(f"arc-jax data: error: {name}: ")


def test_a_folder_without_the_split_is_one_line(tmp_path, capsys):
    write_jsonl(tmp_path / "hub" / "train-00000-of-00001.jsonl", SQUAD_ROWS)
    err = one_line_error(capsys, ["data", "prepare", "squad", "--from", str(tmp_path / "hub"),
                                  "--out", str(tmp_path / "o")])
    assert err == (f"arc-jax data: error: {tmp_path / 'hub'}: no file of split 'validation' (found train): pass "
                   "--split or the split's file itself")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "validation-00000-of-00001.parquet").write_bytes(b"PAR1")
    err = one_line_error(capsys, ["data", "prepare", "squad", "--from", str(tmp_path), "--out", str(tmp_path / "o")])
    assert err == "arc-jax data: error: reading parquet files needs pyarrow: pip install 'arc-jax[prepare]'"


def test_an_interrupted_run_leaves_no_half_file(tmp_path, capsys, monkeypatch):
    """A run stopped mid-way (here a KeyboardInterrupt on the second row) writes nothing: the earlier
    file is intact and no temporary file is left."""
    source = write_jsonl(tmp_path / "validation.jsonl", SQUAD_ROWS)
    out = tmp_path / "data"
    run(capsys, "squad", source, out)
    before = (out / "raw" / "squad_validation.jsonl").read_bytes()
    seen = []

    def interrupted(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return prep._squad({**row, "question": "changed"})

    monkeypatch.setitem(prep.SOURCES, "squad", prep.dataclasses.replace(prep.SOURCES["squad"], convert=interrupted))
    capsys.readouterr()
    assert main(["data", "prepare", "squad", "--from", str(source), "--out", str(out)]) == 130  # Ctrl-C
    assert capsys.readouterr().err.strip() == "arc-jax data: interrupted (Ctrl-C)"
    assert (out / "raw" / "squad_validation.jsonl").read_bytes() == before
    assert no_temp_files(out)


def test_every_source_is_registered_with_its_outputs():
    """The registry covers the reference's evaluation files (EVAL_DATA_PATH, TRAD_DATA_PATH, the
    long-context EVAL_DATA_PATH) and the released fine-tuning set."""
    outputs = {o for s in prep.SOURCES.values() if isinstance(s, prep.HubSource)
               for o in (*s.outputs, *([s.retrieved] if s.retrieved else []))}
    assert {"w_retrieved/nq_validation.jsonl", "w_retrieved/triviaqa_validation.jsonl", "raw/squad_validation.jsonl",
            "raw/hotpotqa_validation.jsonl", "raw/cnn_validation.jsonl", "flores/eng_Latn.jsonl",
            "flores/spa_Latn.jsonl", "flores/fra_Latn.jsonl", "flores/deu_Latn.jsonl", "flores/dan_Latn.jsonl",
            "long_context/narrativeqa_validation.jsonl", "long_context/qasper_validation.jsonl",
            "long_context/govreport_validation.jsonl", "long_context/qmsum_validation.jsonl"} <= outputs
    assert prep.SOURCES["arc_finetuning"].hub_id == "kyutai/ARC_finetuning"


def test_the_evaluation_files_load_in_arc_jax_eval(tmp_path, capsys):
    """What prepare writes is what `arc-jax eval --data` reads: QA with the passages a string (SQuAD) or a
    list (NQ w_retrieved), translation pairs, summaries."""
    from arc_jax.evaluation.harness import Benchmark, load_examples

    out = tmp_path / "data"
    run(capsys, "squad", write_jsonl(tmp_path / "s" / "validation.jsonl", SQUAD_ROWS[:2]), out)
    run(capsys, "nq", write_jsonl(tmp_path / "n" / "validation.jsonl", [
        {"question": "q1", "answer": ["a1"], "passages": ["P1", "P2"]}]), out)
    run(capsys, "flores", write_flores_release(tmp_path / "release"), out)
    run(capsys, "cnn", write_jsonl(tmp_path / "c" / "test.jsonl", [{"article": "Art.", "highlights": "Hi."}]), out)
    squad = load_examples(Benchmark(str(out / "raw" / "squad_validation.jsonl")))
    assert (squad[1].question, squad[1].answers, squad[1].document) == \
        ("Who was Rollo?", ("a Viking leader",), "Rollo was a Viking leader.")
    nq = load_examples(Benchmark(str(out / "w_retrieved" / "nq_validation.jsonl")), max_passages=2)
    assert (nq[0].answers, nq[0].document) == (("a1",), "P1\nP2")
    pairs = load_examples(Benchmark(str(out / "flores" / "eng_Latn-fra_Latn.jsonl"), "translation"))
    assert (pairs[0].question, pairs[0].answers, pairs[0].document) == \
        ("Translate the previous document into French.", ("Bonjour le monde.",), "Hello world.")
    cnn = load_examples(Benchmark(str(out / "raw" / "cnn_validation.jsonl"), "summarization"))
    assert (cnn[0].question, cnn[0].answers, cnn[0].document) == (prep.CNN_QUESTION, ("Hi.",), "Art.")
