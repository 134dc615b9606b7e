"""Record sources: cached line index, random access, bad records (skip and count, or strict), pickling, grain."""

import json
import pickle
import random

import numpy as np
import pytest

from arc_jax.data import sources
from arc_jax.data.bad_records import BadRecord, BadRecords, DataError
from arc_jax.data.sources import ArrayRecordSource, JsonlSource, open_source

TEXT = {"text": str}
QA = {"question": str, "answer": (str, list)}


def write_lines(path, lines, newline="\n", final_newline=True):
    data = newline.join(lines) + (newline if final_newline else "")
    path.write_bytes(data.encode("utf-8"))
    return path


def texts(n):
    return [json.dumps({"text": f"document {i} " + "é☃" * (i % 5), "id": i}, ensure_ascii=False) for i in range(n)]


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def test_index_is_built_once_and_rebuilt_when_the_data_changes(tmp_path, cache_dir, monkeypatch):
    data = write_lines(tmp_path / "a.jsonl", texts(50))
    assert len(JsonlSource(data, TEXT, cache_dir=cache_dir)) == 50
    index_file = tmp_path / ("a.jsonl" + sources.INDEX_SUFFIX)
    written = index_file.stat()
    built_at = (written.st_ino, written.st_mtime_ns)  # a rebuild writes a new file (new inode), then renames

    def no_rebuild(path):
        raise AssertionError("index rebuilt although the data did not change")

    with monkeypatch.context() as patch:
        patch.setattr(sources, "build_line_index", no_rebuild)
        assert len(JsonlSource(data, TEXT, cache_dir=cache_dir)) == 50
    assert (index_file.stat().st_ino, index_file.stat().st_mtime_ns) == built_at

    with data.open("a") as f:
        f.write(json.dumps({"text": "appended"}) + "\n")
    source = JsonlSource(data, TEXT, cache_dir=cache_dir)
    assert len(source) == 51 and source[50] == {"text": "appended"}
    assert index_file.stat().st_ino != built_at[0]
    assert np.load(index_file)[0, 1] == data.stat().st_size  # the header row records the data it indexes


def test_index_falls_back_to_the_cache_dir_when_the_data_folder_is_not_writable(tmp_path, cache_dir, monkeypatch):
    data = write_lines(tmp_path / "a.jsonl", texts(5))
    save = sources._save_index

    def read_only_data_folder(file, index):
        if file.parent == data.parent:
            raise PermissionError("read-only")
        save(file, index)

    monkeypatch.setattr(sources, "_save_index", read_only_data_folder)
    assert len(JsonlSource(data, TEXT, cache_dir=cache_dir)) == 5
    assert not (tmp_path / ("a.jsonl" + sources.INDEX_SUFFIX)).exists()
    [cached] = list(cache_dir.iterdir())
    assert cached.name.endswith("a.jsonl" + sources.INDEX_SUFFIX)
    monkeypatch.setattr(sources, "build_line_index", lambda path: pytest.fail("index rebuilt"))
    assert JsonlSource(data, TEXT, cache_dir=cache_dir)[4]["id"] == 4


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_random_access_equals_sequential_parsing(tmp_path, cache_dir, monkeypatch, newline):
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 7)  # lines and CRLF pairs straddle read chunks
    lines = texts(40)
    lines[3:3] = ["", ""]  # blank lines are not records
    data = write_lines(tmp_path / "a.jsonl", lines, newline, final_newline=False)
    expected = [json.loads(line) for line in lines if line]
    source = JsonlSource(data, TEXT, cache_dir=cache_dir)
    order = list(range(len(expected)))
    random.Random(0).shuffle(order)
    assert {i: source[i] for i in order} == dict(enumerate(expected))
    assert source.bad.total == 0


BAD_CASES = {  # name: (fields, the bad line's bytes, reason)
    "malformed JSON": (TEXT, b'{"text": "unterminated', "malformed JSON"),
    "invalid UTF-8": (TEXT, b'{"text": "caf\xe9"}', "invalid UTF-8"),
    "not an object": (TEXT, b'["text"]', "not a JSON object"),
    "missing field": (TEXT, b'{"txt": "a"}', "missing field 'text'"),
    "wrong type": (TEXT, b'{"text": 3}', "field 'text' is number, expected string"),
    "null": (QA, b'{"question": "q", "answer": null}', "field 'answer' is null, expected string or array"),
    "non-string answer": (QA, b'{"question": "q", "answer": ["a", 1]}',
                          "field 'answer' is an array with a non-string item"),
    "empty text": (TEXT, b'{"text": " \\n "}', "empty field 'text'"),
    "empty answer list": (QA, b'{"question": "q", "answer": []}', "empty field 'answer'"),
    "lone surrogate": (TEXT, b'{"text": "a\\ud800"}', "invalid Unicode (lone surrogate) in field 'text'"),
    "huge record": (TEXT, b'{"text": "' + b"x" * 300 + b'"}', "record larger than max_record_bytes=256"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_record_is_skipped_and_counted_with_file_line_and_reason(tmp_path, cache_dir, case):
    fields, line, reason = BAD_CASES[case]
    good = b'{"text": "ok", "question": "q", "answer": ["a", "b"]}'
    data = tmp_path / "a.jsonl"
    data.write_bytes(b"\n".join([good, b"", line, good]) + b"\n")  # the bad record is on line 3
    bad = BadRecords()
    source = JsonlSource(data, fields, bad, cache_dir=cache_dir, max_record_bytes=256)
    assert source.read(1) == (None, reason, 3) and bad.total == 0  # read() reports nothing
    assert [source[i] is None for i in range(len(source))] == [False, True, False]
    assert bad.counts == {reason: 1}
    assert bad.examples == [BadRecord(str(data), 3, reason)]

    scanned = BadRecords()
    assert source.scan(scanned) == 2 and scanned.examples == bad.examples

    strict = JsonlSource(data, fields, BadRecords(strict=True), cache_dir=cache_dir, max_record_bytes=256)
    assert strict[0] is not None
    with pytest.raises(DataError) as error:
        strict[1]
    assert str(error.value).startswith(f"{data}:3: {reason} (strict mode") and "\n" not in str(error.value)


@pytest.mark.parametrize("content", [None, b"", b"\n\r\n\n"], ids=["missing", "empty", "blank lines only"])
def test_missing_or_empty_file_is_a_one_line_error_naming_it(tmp_path, cache_dir, content):
    data = tmp_path / "a.jsonl"
    if content is not None:
        data.write_bytes(content)
    with pytest.raises(DataError, match="no such file" if content is None else "empty file") as error:
        JsonlSource(data, TEXT, BadRecords(), cache_dir=cache_dir)
    assert str(error.value).startswith(str(data)) and "\n" not in str(error.value)


def test_source_pickles_without_its_index_and_reads_after_unpickling(tmp_path, cache_dir):
    data = write_lines(tmp_path / "a.jsonl", texts(2000))
    source = JsonlSource(data, TEXT, cache_dir=cache_dir)
    expected = [source[i] for i in range(len(source))]  # opens a file handle, which must not be pickled
    payload = pickle.dumps(source)
    assert len(payload) < 2000  # the index (2000 rows) is reloaded from its cache file, not shipped
    clone = pickle.loads(payload)
    assert len(clone) == 2000 and [clone[i] for i in reversed(range(2000))] == expected[::-1]


def test_grain_worker_processes_read_the_same_records(tmp_path, cache_dir):
    grain = pytest.importorskip("grain")
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags; outside absl.app, use defaults
        flags.FLAGS.mark_as_parsed()
    data = write_lines(tmp_path / "a.jsonl", texts(64))
    source = JsonlSource(data, TEXT, cache_dir=cache_dir)
    sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=grain.sharding.NoSharding(),
                                          shuffle=False, num_epochs=1)
    loader = grain.DataLoader(data_source=source, sampler=sampler, worker_count=2)
    try:
        records = list(loader)
    except (OSError, NotImplementedError) as e:  # no multiprocessing on this platform
        pytest.skip(f"grain worker processes unavailable: {e}")
    assert records == [source[i] for i in range(len(source))]


def test_array_record_source_reads_and_skips_like_jsonl(tmp_path):
    writer_module = pytest.importorskip("array_record.python.array_record_module")
    data = str(tmp_path / "a.arrayrecord")
    writer = writer_module.ArrayRecordWriter(data, "group_size:1")
    for raw in [b'{"text": "zero"}', b'{"text": ""}', b'\xff', b'{"text": "three"}']:
        writer.write(raw)
    writer.close()
    bad = BadRecords()
    source = open_source(data, TEXT, bad)
    assert isinstance(source, ArrayRecordSource) and len(source) == 4
    clone = pickle.loads(pickle.dumps(source))
    assert [clone[i] for i in range(4)] == [{"text": "zero"}, None, None, {"text": "three"}]
    assert [source[i] for i in range(4)] == [{"text": "zero"}, None, None, {"text": "three"}]
    assert bad.examples == [BadRecord(data, 1, "empty field 'text'"), BadRecord(data, 2, "invalid UTF-8")]
    assert source.scan(BadRecords()) == 2 and source.read(2) == (None, "invalid UTF-8", 2)
    with pytest.raises(DataError, match="strict mode"):
        ArrayRecordSource(data, TEXT, BadRecords(strict=True))[1]


def test_array_record_unusable_files_are_one_line_errors(tmp_path):
    writer_module = pytest.importorskip("array_record.python.array_record_module")
    empty = tmp_path / "empty.arrayrecord"
    writer_module.ArrayRecordWriter(str(empty), "group_size:1").close()
    not_array_record = tmp_path / "text.array_record"
    not_array_record.write_text("hello")
    for path, message in [(tmp_path / "missing.arrayrecord", "no such file"), (empty, "empty file"),
                          (not_array_record, "not a readable ArrayRecord file")]:
        with pytest.raises(DataError, match=message) as error:
            open_source(path, TEXT)
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_open_source_chooses_by_extension(tmp_path, cache_dir):
    data = write_lines(tmp_path / "a.jsonl", texts(3))
    assert isinstance(open_source(data, TEXT, cache_dir=cache_dir), JsonlSource)
    with pytest.raises(DataError, match=r"unknown data format '\.json' \(expected \.jsonl"):
        open_source(tmp_path / "a.json", TEXT)
