"""`arc-jax data prepare`: the reference's jsonl files from the Hugging Face hub.

The reference (kyutai-labs/ARC-Encoder) builds its data with load_datasets.ipynb; its evaluation
reads fixed paths under DATA_PATH (embed_llm/generation/utils.py EVAL_DATA_PATH and TRAD_DATA_PATH,
embed_llm/generation/long_context/eval_long_context.py EVAL_DATA_PATH). Here each set is one
`HubSource` (hub id, config, split, record conversion) or, for the released fine-tuning archive, the
`ArchiveSource`; `prepare()` writes its files under `out` at the reference's relative paths:

    raw/{squad,hotpotqa,cnn,nq,triviaqa}_validation.jsonl   question, answer, passages
    w_retrieved/{nq,triviaqa}_validation.jsonl              + passages, when the input has them
    flores/{eng,spa,fra,deu,dan}_Latn.jsonl                 {"text": sentence}, line-aligned
    flores/eng_Latn-{spa,fra,deu,dan}_Latn.jsonl            pairs for `arc-jax eval FILE:translation`
    long_context/{narrativeqa,qasper,govreport,qmsum}_validation.jsonl
    *.jsonl (arc_finetuning)                                the released files, flat, as
                                                            configs/common/paper.py's mixture reads them

Records are written with json.dumps as the notebook does (its key order, ASCII escapes). A hub row the
notebook's code cannot convert (a missing field, no "\\n\\n" in a SCROLLS input), or whose record
`arc-jax eval` would reject (an empty or non-string field), is skipped and reported with its place
(file:line, file row N, or hub row N) and reason.

Input: with `from_path`, a local copy of the split in the hub's own layout (parquet, jsonl or json
files, a folder of them, or the zip/tar archive the hub serves); without it, the hub through the
`datasets` library (the `prepare` extra) or, for archives, `huggingface_hub`. Local jsonl/json is read
with the standard library (line numbers for the report, answers that are a string in one record and a
list in the next), parquet with pyarrow (installed with `datasets`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, Sequence

from arc_jax.errors import DataError

EXTRA_HINT = "pip install 'arc-jax[prepare]'"
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
SPLIT_ALIASES = {"validation": ("validation", "valid", "val"), "dev": ("dev",), "test": ("test",),
                 "train": ("train",), "devtest": ("devtest",)}
_ALL_SPLIT_NAMES = {a for aliases in SPLIT_ALIASES.values() for a in aliases}
_PASSAGE_FIELDS = ("passages", "passage")


class Skip(ValueError):
    """A hub row that makes no record; the message is the reason."""


# --- Reading a row's fields -----------------------------------------------------------------------

def _get(row, *path):
    """row[path[0]][path[1]]...; Skip naming the dotted path when a step is missing."""
    value = row
    for depth, key in enumerate(path):
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            dotted = ".".join(str(k) for k in path[:depth + 1])
            raise Skip(f"missing field '{dotted}'") from None
    return value


def _str(row, *path) -> str:
    value = _get(row, *path)
    if not isinstance(value, str):
        raise Skip(f"field '{'.'.join(str(k) for k in path)}' is {type(value).__name__}, expected a string")
    return value


def _check(record: dict) -> dict:
    """The record, or Skip when `arc-jax eval` (and the training pipeline) would reject one of its text
    fields: missing, empty, not a string or a list of strings."""
    from arc_jax.data.sources import field_problem

    for name in record:
        if name not in ("language", "scores") and (reason := field_problem(record, name, (str, list))):
            raise Skip(reason)
    return record


def _user_passages(row: dict) -> list[str] | None:
    """Retrieved passages given in the input record (NQ, TriviaQA): `passages` (or `passage`), a list of
    strings best first, a single string, or a list of objects with a "text" key (as the reference's
    retrieval reads Atlas chunks). None when the record has none."""
    name = next((n for n in _PASSAGE_FIELDS if n in row and row[n] is not None), None)
    if name is None:
        return None
    value = row[name]
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list):
        raise Skip(f"field '{name}' is {type(value).__name__}, expected a list of strings")
    passages = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise Skip(f"field '{name}' holds a {type(item).__name__}, expected strings or {{\"text\": ...}}")
        passages.append(item)
    return passages


# --- Record conversions (load_datasets.ipynb, cell by cell) ----------------------------------------

def _squad(row: dict) -> dict:
    # Cell 2: the first answer; the context as a string (not a list) under "passages".
    return {"raw/squad_validation.jsonl": _check({
        "question": _str(row, "question"), "answer": _str(row, "answers", "text", 0),
        "passages": _str(row, "context")})}


CNN_QUESTION = "What is a very short summary of the above text?"


def _cnn(row: dict) -> dict:
    # Cell 3: the test split, written as cnn_validation.jsonl.
    return {"raw/cnn_validation.jsonl": _check({
        "question": CNN_QUESTION, "answer": _str(row, "highlights"), "passages": _str(row, "article")})}


def _hotpotqa(row: dict) -> dict:
    # Cell 4: one passage per paragraph, its sentences joined by a space, titles dropped. The hub's
    # context is {"title": [...], "sentences": [[...], ...]}; HotpotQA's own json has [[title, sentences]].
    context = _get(row, "context")
    if isinstance(context, dict):
        paragraphs = _get(context, "sentences")
    elif isinstance(context, list):
        try:
            paragraphs = [sentences for _, sentences in context]
        except (TypeError, ValueError):
            raise Skip("field 'context' is neither {title, sentences} nor [[title, sentences], ...]") from None
    else:
        raise Skip(f"field 'context' is {type(context).__name__}, expected an object")
    if not isinstance(paragraphs, list) or not all(isinstance(p, list) for p in paragraphs):
        raise Skip("field 'context.sentences' is not a list of sentence lists")
    try:
        passages = [" ".join(sentences) for sentences in paragraphs]
    except TypeError:
        raise Skip("field 'context.sentences' holds a non-string sentence") from None
    return {"raw/hotpotqa_validation.jsonl": _check({
        "question": _str(row, "question"), "answer": _str(row, "answer"), "passages": passages})}


def _retrieval_records(name: str, question: str, answer, row: dict) -> dict:
    """raw/NAME_validation.jsonl as the notebook writes it, and w_retrieved/NAME_validation.jsonl (the file
    the reference evaluates, written by its retrieval/passage_retrieval.py: question, passages, answer,
    scores) when the input record carries passages."""
    records = {f"raw/{name}_validation.jsonl": _check({"question": question, "answer": answer})}
    passages = _user_passages(row)
    if passages is not None:
        record = {"question": question, "passages": passages, "answer": answer}
        if isinstance(row.get("scores"), list):
            record["scores"] = [str(s) for s in row["scores"]]
        records[f"w_retrieved/{name}_validation.jsonl"] = _check(record)
    return records


def _nq(row: dict) -> dict:
    # Cell 7: the first answer. A record already converted (answer a string) is taken as it is.
    answer = _get(row, "answer")
    answer = answer if isinstance(answer, str) else _str(row, "answer", 0)
    return _retrieval_records("nq", _str(row, "question"), answer, row)


def _triviaqa(row: dict) -> dict:
    # Cell 8: every alias, a list. A record already converted (answer a list) is taken as it is.
    answer = _get(row, "answer")
    aliases = answer if isinstance(answer, list) else _get(row, "answer", "aliases")
    return _retrieval_records("triviaqa", _str(row, "question"), aliases, row)


# The English source and the four targets of TRAD_DATA_PATH (embed_llm/generation/utils.py).
FLORES_LANGUAGES = {"eng_Latn": "English", "spa_Latn": "Spanish", "fra_Latn": "French", "deu_Latn": "German",
                    "dan_Latn": "Danish"}


def _flores(row: dict) -> dict:
    # Cell 5 writes json.dumps(sentence), a bare string, but the reference's evaluation reads
    # json.loads(line)["text"] (eval_context_comp.py): {"text": sentence}, one line per sentence, the
    # files aligned line by line. The pair files put source and target in one record for arc-jax eval.
    sentences = {code: _str(row, f"sentence_{code}") for code in FLORES_LANGUAGES}
    records = {f"flores/{code}.jsonl": _check({"text": text}) for code, text in sentences.items()}
    for code, language in FLORES_LANGUAGES.items():
        if code != "eng_Latn":
            records[f"flores/eng_Latn-{code}.jsonl"] = _check(
                {"passage": sentences["eng_Latn"], "answer": sentences[code], "language": language})
    return records


NARRATIVEQA_INSTRUCTION = ("You are given a story, which can be either a novel or a movie script, and a question. "
                           "Answer the question as concisely as you can, using a single phrase if possible.\n\n")
QASPER_INSTRUCTION = ("You are given a scientific article and a question. Answer the question as concisely as you "
                      "can, using a single phrase or sentence if possible. If the question cannot be answered based "
                      "on the information in the article, write \"unanswerable\". If the question is a yes/no "
                      "question, answer \"yes\", \"no\", or \"unanswerable\".\n\n")
GOVREPORT_INSTRUCTION = ("Instruction: You are given a report by a government agency. Write a one-page summary of "
                         "the report.\n")
QMSUM_INSTRUCTION = ("You are given a meeting transcript and a query containing a question or instruction. Answer "
                     "the query in one or more sentences.\n\n")


def _narrativeqa(row: dict) -> dict:
    # Cell 16 (# NQA): the whole document, every reference answer.
    answers = _get(row, "answers")
    if not isinstance(answers, list):
        raise Skip(f"field 'answers' is {type(answers).__name__}, expected a list")
    return {"long_context/narrativeqa_validation.jsonl": _check({
        "passage": _str(row, "document", "text"),
        "answer": [_str(answer, "text") for answer in answers],
        "question": _str(row, "question", "text"), "instruction": NARRATIVEQA_INSTRUCTION})}


def _scrolls_input(row: dict) -> tuple[str, int]:
    text = _str(row, "input")
    if "\n\n" not in text:
        raise Skip("field 'input' has no blank line between the query and the document")
    return text, text.index("\n\n")


def _qasper(row: dict) -> dict:
    # Cell 16 (# QASPER): SCROLLS input = question + "\n\n" + article; one record per hub row.
    text, cut = _scrolls_input(row)
    return {"long_context/qasper_validation.jsonl": _check({
        "passage": text[cut + 2:].strip(), "answer": _str(row, "output"), "question": text[:cut].strip(),
        "instruction": QASPER_INSTRUCTION})}


def _govreport(row: dict) -> dict:
    # Cell 16 (# GovReport): no question.
    return {"long_context/govreport_validation.jsonl": _check({
        "passage": _str(row, "report"), "answer": _str(row, "summary"), "instruction": GOVREPORT_INSTRUCTION})}


def _qmsum(row: dict) -> dict:
    # Cell 16 (# QMSUM): the question is the input's first line (not up to the blank line).
    text, cut = _scrolls_input(row)
    return {"long_context/qmsum_validation.jsonl": _check({
        "passage": text[cut + 2:].strip(), "answer": _str(row, "output"), "question": text.split("\n")[0].strip(),
        "instruction": QMSUM_INSTRUCTION})}


# --- The registry ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HubSource:
    """One hub dataset: where the reference loads it from and how a row becomes its record(s).

    `convert(row)` returns {output path relative to --out (default split's name): record}, or raises Skip.
    `cell`: the load_datasets.ipynb cell it follows (counted from 0).
    `hub_file`: a file of the hub repo read directly (its loading script cannot run on datasets >= 4).
    `script`: the repo is only a loading script (no data files on the hub); --from is the way.
    `retrieved`: the with-passages output, written only for input records that carry passages."""

    name: str
    hub_id: str
    config: str | None
    split: str
    convert: Callable[[dict], dict]
    outputs: tuple[str, ...]
    cell: str
    hub_file: str | None = None
    script: bool = False
    retrieved: str | None = None
    local_hint: str = ""


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
    """The released fine-tuning set: one archive of jsonl files already in the reference's fields
    (question, answer as a string or a list, passage or passages, optional instruction), written flat."""

    name: str
    hub_id: str
    hub_file: str
    expected: tuple[str, ...]
    cell: str


_FLORES_OUTPUTS = tuple(f"flores/{c}.jsonl" for c in FLORES_LANGUAGES) + tuple(
    f"flores/eng_Latn-{c}.jsonl" for c in FLORES_LANGUAGES if c != "eng_Latn")

SOURCES: dict[str, HubSource | ArchiveSource] = {s.name: s for s in (
    # The files of configs/finetuning_*.yaml's train_data (= configs/common/paper.py FINETUNE_MIXTURE).
    ArchiveSource("arc_finetuning", "kyutai/ARC_finetuning", "ARC-Encoder_ft.zip", (
        "adversarialqa.jsonl", "freebaseqa.jsonl", "asqa.jsonl", "msmarco.jsonl", "sciq.jsonl", "drop.jsonl",
        "low_res_short_translation.jsonl", "low_res_mid_translation.jsonl", "short_translation.jsonl",
        "dialogsum.jsonl", "samsum.jsonl", "wikisum.jsonl", "parasci.jsonl"), "cell 11"),
    HubSource("nq", "google-research-datasets/nq_open", "nq_open", "validation", _nq,
              ("raw/nq_validation.jsonl",), "cell 7 (#NQ)", retrieved="w_retrieved/nq_validation.jsonl"),
    HubSource("triviaqa", "mandarjoshi/trivia_qa", "unfiltered.nocontext", "validation", _triviaqa,
              ("raw/triviaqa_validation.jsonl",), "cell 8 (#TRIVIAQA)",
              retrieved="w_retrieved/triviaqa_validation.jsonl"),
    HubSource("hotpotqa", "hotpotqa/hotpot_qa", "distractor", "validation", _hotpotqa,
              ("raw/hotpotqa_validation.jsonl",), "cell 4 (#HotpotQA)"),
    HubSource("squad", "rajpurkar/squad", "plain_text", "validation", _squad,
              ("raw/squad_validation.jsonl",), "cell 2 (# SQUAD)"),
    HubSource("flores", "facebook/flores", "all", "dev", _flores, _FLORES_OUTPUTS, "cell 5 (# Load Flores)",
              script=True, local_hint="download flores200_dataset.tar.gz (the NLLB release the loading script "
                                      "reads, dl.fbaipublicfiles.com/nllb/) and pass it, or its dev/ folder, "
                                      "as --from"),
    HubSource("cnn", "abisee/cnn_dailymail", "1.0.0", "test", _cnn,
              ("raw/cnn_validation.jsonl",), "cell 3 (# CNN/Dailymail)"),
    HubSource("narrativeqa", "deepmind/narrativeqa", None, "validation", _narrativeqa,
              ("long_context/narrativeqa_validation.jsonl",), "cell 16 (# NQA)"),
    HubSource("qasper", "tau/scrolls", "qasper", "validation", _qasper,
              ("long_context/qasper_validation.jsonl",), "cell 16 (# QASPER)", hub_file="qasper.zip"),
    HubSource("govreport", "ccdv/govreport-summarization", None, "validation", _govreport,
              ("long_context/govreport_validation.jsonl",), "cell 16 (# GovReport)"),
    HubSource("qmsum", "tau/scrolls", "qmsum", "validation", _qmsum,
              ("long_context/qmsum_validation.jsonl",), "cell 16 (# QMSUM)", hub_file="qmsum.zip"),
)}


def output_name(path: str, split: str, default_split: str) -> str:
    """The reference's file name for the default split; for another split, "_validation" in the name
    becomes "_SPLIT" (or "_SPLIT" is appended), so other splits never overwrite the evaluated file."""
    if split == default_split:
        return path
    p = PurePosixPath(path)
    stem = p.stem.replace("_validation", f"_{split}") if "_validation" in p.stem else f"{p.stem}_{split}"
    return str(p.with_name(stem + p.suffix))


# --- Local files in the hub's layout --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Member:
    """A data file on disk or inside an archive: its displayed name, its path parts for split/config
    filtering, and how to open it (binary)."""

    name: str
    parts: tuple[str, ...]
    open: Callable[[], IO[bytes]]


def _suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in ARCHIVE_SUFFIXES + DATA_SUFFIXES if lower.endswith(s)), PurePosixPath(lower).suffix)


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith((".", "__MACOSX")) for p in parts)


def _archive_members(path: Path, display: str, suffixes: tuple[str, ...]) -> list[_Member]:
    members = []
    if _suffix(path.name) == ".zip":
        archive = zipfile.ZipFile(path)
        for info in archive.infolist():
            parts = tuple(PurePosixPath(info.filename).parts)
            if not info.is_dir() and not _hidden(parts) and _suffix(info.filename) in suffixes:
                members.append(_Member(f"{display}/{info.filename}", parts,
                                       lambda info=info: archive.open(info)))
    else:
        archive = tarfile.open(path)
        for info in archive.getmembers():
            parts = tuple(PurePosixPath(info.name).parts)
            if info.isfile() and not _hidden(parts) and _suffix(info.name) in suffixes:
                members.append(_Member(f"{display}/{info.name}", parts,
                                       lambda info=info: archive.extractfile(info)))
    return members


def local_members(path: Path, suffixes: tuple[str, ...] = DATA_SUFFIXES) -> list[_Member]:
    """Every data file of `path` (a file, an archive, or a folder searched recursively, archives in it
    opened), sorted by name; hidden files and __MACOSX are left out."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        files = [(path, (path.stem,))]
    else:
        files = [(f, f.relative_to(path).parts) for f in sorted(path.rglob("*"))
                 if f.is_file() and not _hidden(f.relative_to(path).parts)]
    members = []
    for file, parts in files:
        suffix = _suffix(file.name)
        if suffix in ARCHIVE_SUFFIXES:
            try:
                inner = _archive_members(file, str(file), suffixes)
            except (zipfile.BadZipFile, tarfile.TarError, OSError) as e:
                raise DataError(f"{file}: cannot open the archive ({e})") from None
            members += [dataclasses.replace(m, parts=parts[:-1] + (file.name,) + m.parts) for m in inner]
        elif suffix in suffixes:
            members.append(_Member(str(file), parts, lambda file=file: open(file, "rb")))
    return sorted(members, key=lambda m: m.name)


def _names(part: str) -> set[str]:
    """The names a path part may carry: the part, its stem and the stem's words between '-', '_' and
    '.' (validation-00000-of-00001.parquet, nq_validation.jsonl and validation/ all name "validation")."""
    stem = part
    for suffix in ARCHIVE_SUFFIXES + DATA_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return {part, stem, *re.split(r"[-_.]", stem)}


def select_members(members: list[_Member], split: str, config: str | None, what: Path) -> list[_Member]:
    """The members of `split` (a path part named after it: validation/, validation-00000-of-00001.parquet,
    validation.jsonl) and, where a path part names the config (distractor/, qasper.zip), of `config`.
    Files that name no split at all are all taken."""
    aliases = set(SPLIT_ALIASES.get(split, (split,)))
    names = [set().union(*(_names(p) for p in m.parts)) for m in members]
    chosen = [m for m, n in zip(members, names) if n & aliases]
    if not chosen:
        found = sorted(set().union(*names) & _ALL_SPLIT_NAMES) if names else []
        if found:
            raise DataError(f"{what}: no file of split {split!r} (found {', '.join(found)}): pass --split or the "
                            "split's file itself")
        chosen = members
    if config is not None:
        by_config = [m for m in chosen if any(config in _names(p) for p in m.parts)]
        chosen = by_config or chosen
    return chosen


def _jsonl_rows(member: _Member) -> Iterator[tuple[str, dict | str]]:
    """(place, row or reason) for each record of a jsonl file, or of a json file holding one array (or
    an object with a "data" array) of records."""
    with member.open() as f:
        if member.name.lower().endswith(".json"):
            content = f.read()
            try:
                data = json.loads(content.decode("utf-8-sig"))
            except (ValueError, UnicodeDecodeError):
                lines = io.BytesIO(content)  # a .json file that holds json lines
            else:
                if isinstance(data, dict) and isinstance(data.get("data"), list):
                    data = data["data"]
                rows = data if isinstance(data, list) else [data]
                for i, row in enumerate(rows, 1):
                    yield f"{member.name} item {i}", row if isinstance(row, dict) else "not a JSON object"
                return
        else:
            lines = f
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            place = f"{member.name}:{number}"
            try:
                row = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError:
                yield place, "invalid UTF-8"
                continue
            except ValueError:
                yield place, "malformed JSON"
                continue
            yield place, row if isinstance(row, dict) else "not a JSON object"


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading parquet files needs pyarrow: {EXTRA_HINT}") from None
    return pq


def _parquet_rows(member: _Member) -> Iterator[tuple[str, dict | str]]:
    pq = _pyarrow_parquet()
    with member.open() as f:
        source = f if f.seekable() else io.BytesIO(f.read())
        number = 0
        for batch in pq.ParquetFile(source).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                number += 1
                yield f"{member.name} row {number}", row


def member_rows(member: _Member) -> Iterator[tuple[str, dict | str]]:
    if member.name.lower().endswith(".parquet"):
        return _parquet_rows(member)
    return _jsonl_rows(member)


def _parquet_count(member: _Member) -> int | None:
    if not member.name.lower().endswith(".parquet"):
        return None
    with member.open() as f:
        return _pyarrow_parquet().ParquetFile(f if f.seekable() else io.BytesIO(f.read())).metadata.num_rows


# FLORES-200 as released (flores200_dataset/dev/eng_Latn.dev): one sentence a line, one file a language.
def _flores_release(path: Path, split: str) -> Iterator[tuple[str, dict | str]] | None:
    members = {}
    for m in local_members(path, suffixes=(f".{split}",)):
        code = PurePosixPath(m.parts[-1]).stem
        if code in FLORES_LANGUAGES:
            members.setdefault(code, m)
    if not members:
        return None
    missing = [c for c in FLORES_LANGUAGES if c not in members]
    if missing:
        raise DataError(f"{path}: no {', '.join(f'{c}.{split}' for c in missing)} (FLORES-200 files of split "
                        f"{split!r}: {', '.join(f'{c}.{split}' for c in FLORES_LANGUAGES)})")
    lines = {}
    for code, m in members.items():
        with m.open() as f:
            lines[code] = [line.decode("utf-8").strip() for line in f.read().splitlines()]
    counts = {len(v) for v in lines.values()}
    if len(counts) != 1:
        raise DataError(f"{path}: the FLORES-200 {split} files differ in length "
                        f"({', '.join(f'{c}: {len(v)}' for c, v in lines.items())})")
    english = members["eng_Latn"].name

    def rows():
        for i in range(counts.pop()):
            yield f"{english}:{i + 1}", {f"sentence_{code}": lines[code][i] for code in FLORES_LANGUAGES}
    return rows()


def local_rows(source: HubSource, path: Path, split: str) -> tuple[int | None, Iterator[tuple[str, dict | str]]]:
    """(the row count when known, (place, row or reason) for every row)."""
    if source.name == "flores" and (release := _flores_release(path, split)) is not None:
        return None, release
    members = local_members(path)
    if not members:
        raise DataError(f"{path}: no parquet, jsonl or json file (in the hub's layout of {source.hub_id})")
    if not (path.is_file() and _suffix(path.name) in DATA_SUFFIXES):
        members = select_members(members, split, source.config, path)
    counts = [_parquet_count(m) for m in members]
    total = None if None in counts else sum(counts)

    def rows():
        for m in members:
            yield from member_rows(m)
    return total, rows()


# --- The hub --------------------------------------------------------------------------------------

def _require(module: str, source_name: str):
    try:
        return __import__(module)
    except ImportError:
        raise DataError(f"{source_name}: downloading from the Hugging Face hub needs the datasets library: "
                        f"{EXTRA_HINT} (or pass --from a local copy)") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def hub_file(source, filename: str) -> Path:
    _require("datasets", source.name)  # the extra brings huggingface_hub with it
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=source.hub_id, filename=filename, repo_type="dataset"))
    except Exception as e:  # network, authentication, a moved file: one line, and the offline way
        raise DataError(f"{source.hub_id}/{filename}: download failed ({_first_line(e)}); download it by hand "
                        "and pass --from") from None


def hub_rows(source: HubSource, split: str) -> tuple[int | None, Iterator[tuple[str, dict | str]]]:
    if source.hub_file is not None:
        return local_rows(source, hub_file(source, source.hub_file), split)
    datasets = _require("datasets", source.name)
    kwargs = {}
    if source.script:
        if int(datasets.__version__.split(".")[0]) >= 4:
            raise DataError(f"{source.hub_id} is a loading script, which datasets {datasets.__version__} cannot "
                            f"run: {source.local_hint}")
        kwargs["trust_remote_code"] = True
    try:
        data = datasets.load_dataset(source.hub_id, source.config, split=split, **kwargs)
    except Exception as e:  # the hub's failures are many; each is one line here
        hint = source.local_hint or "download the split's files and pass --from"
        raise DataError(f"{source.hub_id} ({source.config or 'default'}, {split}): could not load "
                        f"({_first_line(e)}); {hint}") from None
    where = f"{source.hub_id}[{split}]"
    return len(data), ((f"{where} row {i}", row) for i, row in enumerate(data, 1))


# --- Writing --------------------------------------------------------------------------------------

class _AtomicFiles:
    """Output files written under temporary names beside their targets and renamed over them only when
    every one is complete (commit), so an interrupted run leaves no half-written file."""

    def __init__(self, out: Path):
        self.out = out
        self.files: dict[str, tuple[IO[str], Path]] = {}

    def write(self, rel: str, line: str) -> None:
        if rel not in self.files:
            target = self.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            self.files[rel] = (os.fdopen(fd, "w", encoding="utf-8"), Path(tmp))
        self.files[rel][0].write(line)

    def write_bytes_line(self, rel: str, raw: bytes) -> None:
        self.write(rel, raw.decode("utf-8-sig") + "\n")

    def commit(self) -> None:
        for f, _ in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for rel, (_, tmp) in self.files.items():
            os.replace(tmp, self.out / rel)
        self.files = {}

    def abort(self) -> None:
        for f, tmp in self.files.values():
            f.close()
            tmp.unlink(missing_ok=True)
        self.files = {}


@dataclasses.dataclass
class Report:
    """What a run wrote: records per output file (relative to out), skipped records (place, reason), and
    notes (one line each)."""

    name: str
    out: Path
    written: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def lines(self, max_skips: int = 20) -> list[str]:
        files = "; ".join(f"{self.out / rel}: {n} record{'' if n == 1 else 's'}" for rel, n in self.written.items())
        files = files or "no file written"
        lines = [*self.notes, f"prepared {self.name}: {files}; {len(self.skipped)} skipped"]
        lines += [f"  skipped {place}: {reason}" for place, reason in self.skipped[:max_skips]]
        if len(self.skipped) > max_skips:
            lines.append(f"  ... and {len(self.skipped) - max_skips} more skipped")
        return lines


def _progress(rows, total: int | None, name: str, unit: str = "rec"):
    from tqdm import tqdm

    return tqdm(rows, total=total, desc=name, unit=unit, leave=False, disable=None)


def _prepare_rows(source: HubSource, rows, total, out: Path, split: str, max_records: int | None,
                  report: Report) -> None:
    files = _AtomicFiles(out)
    without_passages = []
    bar = _progress(rows, total, source.name)
    try:
        for n, (place, row) in enumerate(bar):
            if max_records is not None and n >= max_records:
                break
            if isinstance(row, str):
                report.skipped.append((place, row))
                continue
            try:
                records = source.convert(row)
            except Skip as e:
                report.skipped.append((place, str(e)))
                continue
            if source.retrieved and source.retrieved not in records:
                without_passages.append(place)
            for rel, record in records.items():
                rel = output_name(rel, split, source.split)
                files.write(rel, json.dumps(record) + "\n")
                report.written[rel] = report.written.get(rel, 0) + 1
        if source.retrieved:
            retrieved = output_name(source.retrieved, split, source.split)
            if retrieved not in report.written:
                raw = output_name(source.outputs[0], split, source.split)
                report.notes.append(f"{source.name}: no retrieved passages in the input, so {raw} has none and "
                                    f"{retrieved} is not written (closed-book evaluation works; for open-book and "
                                    "compressed runs give each record a 'passages' list, see README)")
            else:
                report.skipped += [(place, f"no 'passages': left out of {retrieved} (kept in the raw file)")
                                   for place in without_passages]
        files.commit()
    finally:
        bar.close()
        files.abort()


def _check_finetuning_line(raw: bytes) -> str | None:
    """Why a released fine-tuning line is unusable (the reference's embed_llm/data/tokenize.py fields:
    answer a string or a list, passage or passages, question and instruction strings when present)."""
    from arc_jax.data.sources import field_problem, parse_record

    record, reason = parse_record(raw, {"answer": (str, list)}, max_record_bytes=len(raw))
    if reason:
        return reason
    name = next((n for n in _PASSAGE_FIELDS if n in record), None)
    if name is None:
        return "missing field 'passage' or 'passages'"
    for field, types in ((name, (str, list)), ("question", str), ("instruction", str)):
        if field in record and (reason := field_problem(record, field, types)):
            return reason
    return None


def _prepare_archive(source: ArchiveSource, path: Path, out: Path, max_records: int | None,
                     report: Report) -> None:
    members = local_members(path, suffixes=(".jsonl",))
    if not members:
        raise DataError(f"{path}: no jsonl file (the {source.hub_file} of {source.hub_id} holds them)")
    by_name: dict[str, _Member] = {}
    for m in members:
        base = m.parts[-1]
        if base in by_name:
            raise DataError(f"{path}: two files named {base} ({by_name[base].name}, {m.name})")
        by_name[base] = m
    files = _AtomicFiles(out)
    try:
        for base, m in by_name.items():
            report.written[base] = 0
            with m.open() as f, contextlib.closing(_progress(f, None, base, unit="line")) as bar:
                n = 0
                for number, raw in enumerate(bar, 1):
                    raw = raw.rstrip(b"\r\n")
                    if not raw.strip():
                        continue
                    if max_records is not None and n >= max_records:
                        break
                    n += 1
                    if reason := _check_finetuning_line(raw):
                        report.skipped.append((f"{m.name}:{number}", reason))
                        continue
                    files.write_bytes_line(base, raw)
                    report.written[base] += 1
            if not report.written[base]:
                del report.written[base]
        missing = [e for e in source.expected if e not in by_name]
        if missing:
            report.notes.append(f"{source.name}: not in {path}: {', '.join(missing)} (files of the paper's "
                                "fine-tuning mixture)")
        files.commit()
    finally:
        files.abort()


def prepare(name: str, out: str | Path, from_path: str | Path | None = None, split: str | None = None,
            max_records: int | None = None) -> Report:
    """Write dataset `name`'s jsonl files under `out` (see the module docstring); DataError (one line) on
    an unknown name, a missing --from path, no `datasets` for a download, or unreadable input."""
    source = SOURCES.get(name)
    if source is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    if max_records is not None and max_records < 1:
        raise DataError(f"--max-records must be at least 1 (got {max_records})")
    path = Path(from_path) if from_path is not None else None
    if path is not None and not path.exists():
        raise DataError(f"{path}: no such file or folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: not a folder (--out)")
    report = Report(name, out)
    if isinstance(source, ArchiveSource):
        if split is not None:
            raise DataError(f"{name}: the released archive has no splits; leave out --split")
        _prepare_archive(source, path if path is not None else hub_file(source, source.hub_file), out,
                         max_records, report)
        return report
    split = split or source.split
    if path is not None:
        total, rows = local_rows(source, path, split)
    else:
        total, rows = hub_rows(source, split)
    if max_records is not None and total is not None:
        total = min(total, max_records)
    with contextlib.closing(rows) if hasattr(rows, "close") else contextlib.nullcontext():
        _prepare_rows(source, rows, total, out, split, max_records, report)
    return report
