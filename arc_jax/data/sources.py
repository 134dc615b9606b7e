"""Random-access record sources over jsonl and ArrayRecord files; bad records are skipped and counted.

A source maps an index to a parsed record dict, or to None for a bad record after reporting it (file:line
and reason) to a `BadRecords`. Whether a record is bad depends only on its bytes, so every process makes
the same decision. Grain worker processes count into their own copy of `bad`, which the main process
never sees, so either use `read(i)` (record or reason, and the line, reporting nothing) and pass skips on
to the main process to count, or run `source.scan(bad)` in the main process for exact per-file counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import threading
import uuid

import numpy as np
from etils import epath

from arc_jax.data.bad_records import BadRecords, DataError

log = logging.getLogger("arc_jax.data")

FieldTypes = dict[str, type | tuple[type, ...]]  # e.g. {"question": str, "answer": (str, list)}

MAX_RECORD_BYTES = 1 << 20
INDEX_SUFFIX = ".arcidx.npy"
_INDEX_VERSION = 1
_CHUNK_BYTES = 1 << 26  # index building streams the file in chunks of this size
_JSON_TYPE_NAMES = {str: "string", list: "array", dict: "object", int: "number", float: "number",
                    bool: "boolean", type(None): "null"}


def _too_large(max_record_bytes: int) -> str:
    return f"record larger than max_record_bytes={max_record_bytes}"


def parse_record(raw: bytes, fields: FieldTypes, max_record_bytes: int = MAX_RECORD_BYTES):
    """(record, None) for a good record, (None, reason) for a bad one. Depends only on the arguments."""
    if len(raw) > max_record_bytes:
        return None, _too_large(max_record_bytes)
    try:
        text = raw.decode("utf-8-sig")  # -sig: a byte-order mark at the start of a file is not an error
    except UnicodeDecodeError:
        return None, "invalid UTF-8"
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None, "malformed JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    for name, types in fields.items():
        if reason := field_problem(record, name, types):
            return None, reason
    return record, None


def field_problem(record: dict, name: str, types: type | tuple[type, ...]) -> str | None:
    """Why `record[name]` is unusable, or None. Lists hold strings (the reference jsonl's "answer" and
    "passages" are a string or a list of strings)."""
    if name not in record:
        return f"missing field '{name}'"
    value = record[name]
    if not isinstance(value, types):
        names = (_JSON_TYPE_NAMES.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))
        expected = " or ".join(dict.fromkeys(names))
        return f"field '{name}' is {_JSON_TYPE_NAMES.get(type(value), type(value).__name__)}, expected {expected}"
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            return f"field '{name}' is an array with a non-string item"
        items = value
    elif isinstance(value, str):
        items = [value]
    else:
        return None  # numbers, booleans, objects: the type check is all
    if not items or not all(item.strip() for item in items):
        return f"empty field '{name}'"
    try:
        for item in items:
            item.encode("utf-8")  # JSON escapes can hold lone surrogates, which no tokenizer accepts
    except UnicodeEncodeError:
        return f"invalid Unicode (lone surrogate) in field '{name}'"
    return None


def _is_local(path: epath.Path) -> bool:
    return "://" not in str(path)


def _fingerprint(path: epath.Path) -> tuple[int, int]:
    """(size, mtime in ns) of the data file; the cached index is valid while these are unchanged."""
    try:
        if _is_local(path):
            stat = os.stat(path)  # epath's mtime has 1 s resolution locally; os.stat gives ns
            if not os.path.isfile(path):
                raise DataError(f"{path}: not a file")
            return stat.st_size, stat.st_mtime_ns
        stat = path.stat()
        return stat.length, int(stat.mtime * 1e9)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None


def build_line_index(path: epath.Path) -> np.ndarray:
    """int64 rows (byte offset, byte length, 1-based line number) of every non-empty line of `path`."""
    newlines, carriage_returns = [], []
    size, last_byte = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            buf = np.frombuffer(chunk, np.uint8)
            at = np.flatnonzero(buf == ord("\n"))
            before = np.where(at > 0, buf[at - 1], last_byte)  # the byte before each newline, across chunks
            newlines.append(at + size)
            carriage_returns.append(before == ord("\r"))  # so a CRLF file's blank lines count as empty
            size, last_byte = size + len(buf), buf[-1]
    newline = np.concatenate(newlines or [np.zeros(0, np.int64)]).astype(np.int64)
    cr = np.concatenate(carriage_returns or [np.zeros(0, bool)])
    starts = np.concatenate([[0], newline + 1])
    ends = np.concatenate([newline - cr, [size]])
    lines = np.arange(1, len(starts) + 1)
    keep = ends > starts
    return np.stack([starts[keep], ends[keep] - starts[keep], lines[keep]], axis=1).astype(np.int64)


def _default_cache_dir() -> epath.Path:
    return epath.Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "arc_jax" / "index"


def _index_files(path: epath.Path, cache_dir: epath.Path) -> list[epath.Path]:
    """Where the index may live: next to the data, else in the cache dir keyed by the data's full path."""
    full = os.path.abspath(path) if _is_local(path) else str(path)
    key = hashlib.sha256(full.encode()).hexdigest()[:16]
    return [path.parent / (path.name + INDEX_SUFFIX), cache_dir / f"{key}-{path.name}{INDEX_SUFFIX}"]


def _read_index(file: epath.Path, fingerprint: tuple[int, int]) -> np.ndarray | None:
    """The cached index rows, or None if absent, unreadable or made for another version of the data."""
    try:
        if not file.exists():
            return None
        if _is_local(file):
            index = np.load(os.fspath(file), mmap_mode="r")  # shared between processes via the page cache
        else:
            with file.open("rb") as f:
                index = np.load(f)
    except (OSError, ValueError, EOFError):
        return None
    # Row 0 is a header (format version, data size, data mtime); the other rows are the line index.
    if index.ndim != 2 or index.shape[1] != 3 or len(index) < 1:
        return None
    if tuple(int(v) for v in index[0]) != (_INDEX_VERSION, *fingerprint):
        return None
    return index[1:]


def _save_index(file: epath.Path, index: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.parent / f".{file.name}.{uuid.uuid4().hex}.tmp"  # write then rename: readers never see half a file
    try:
        with tmp.open("wb") as f:
            np.save(f, index)
        tmp.replace(file)  # overwrites a stale index
    finally:
        if tmp.exists():
            tmp.unlink()


def load_or_build_index(path: epath.Path, cache_dir: epath.Path) -> tuple[np.ndarray, epath.Path | None]:
    """The line index of `path` and the file it is cached in (None if it could not be written anywhere)."""
    fingerprint = _fingerprint(path)
    candidates = _index_files(path, cache_dir)
    for file in candidates:
        if (index := _read_index(file, fingerprint)) is not None:
            return index, file
    index = build_line_index(path)
    header = np.array([[_INDEX_VERSION, *fingerprint]], np.int64)
    for file in candidates:
        try:
            _save_index(file, np.concatenate([header, index]))
            return index, file
        except Exception as e:  # noqa: BLE001 - a read-only folder or bucket: try the next place
            log.info("cannot write the line index %s (%s: %s)", file, type(e).__name__, e)
    log.warning("%s: the line index could not be cached; every process will rebuild it", path)
    return index, None


class _RecordSource:
    """What both sources share on top of their `read(i) -> (record, reason, where)`: `where` is
    the 1-based line (jsonl) or the record index (ArrayRecord) that bad-record reports name."""

    def __getitem__(self, i) -> dict | None:
        record, reason, where = self.read(i)
        if reason:
            self.bad.skip(str(self.path), where, reason)
        return record

    def scan(self, bad: BadRecords | None = None) -> int:
        """Checks every record in order, reporting bad ones to `bad` (default: the source's own).

        Returns the number of good records. Use it in the main process for exact counts of a file.
        """
        bad = self.bad if bad is None else bad
        good = 0
        for i in range(len(self)):
            _, reason, where = self.read(i)
            if reason:
                bad.skip(str(self.path), where, reason)
            else:
                good += 1
        return good


class JsonlSource(_RecordSource):
    """Random access to the records of a jsonl file (one JSON object per non-empty line).

    Picklable for grain worker processes: the line index is re-read (memory-mapped) from its cache
    file and the data file is reopened lazily in each process and thread.
    """

    def __init__(self, path, fields: FieldTypes, bad: BadRecords | None = None, cache_dir=None,
                 max_record_bytes: int = MAX_RECORD_BYTES):
        self.path = epath.Path(path)
        self.fields = dict(fields)
        self.bad = BadRecords() if bad is None else bad
        self.max_record_bytes = max_record_bytes
        self.cache_dir = epath.Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self._index, self._index_file = load_or_build_index(self.path, self.cache_dir)
        self._len = len(self._index)
        if not self._len:
            raise DataError(f"{self.path}: empty file (no records)")
        self._local = threading.local()

    def __len__(self) -> int:
        return self._len

    def read(self, i) -> tuple[dict | None, str | None, int]:
        """(record, None, line) or (None, reason, line), reporting nothing: for pipelines whose workers
        pass skips on to the main process. `line` is the 1-based line number in the file."""
        i = operator.index(i)
        if not 0 <= i < self._len:
            raise IndexError(f"record {i} out of range for {self.path} ({self._len} records)")
        offset, length, line = (int(v) for v in self._rows()[i])
        if length > self.max_record_bytes:  # decided from the index, without reading the record
            return None, _too_large(self.max_record_bytes), line
        file = self._file()
        file.seek(offset)
        raw = file.read(length)
        if len(raw) != length:
            raise DataError(f"{self.path}: file changed since it was indexed (open the source again)")
        record, reason = parse_record(raw, self.fields, self.max_record_bytes)
        return record, reason, line

    def _rows(self) -> np.ndarray:
        if self._index is None:  # first use after unpickling
            index, _ = load_or_build_index(self.path, self.cache_dir)
            if len(index) != self._len:
                raise DataError(f"{self.path}: file changed since the source was opened")
            self._index = index
        return self._index

    def _file(self):
        # One handle per thread (seek + read is not atomic) and per process (a forked handle shares its offset).
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            try:
                local.file, local.pid = self.path.open("rb"), os.getpid()
            except OSError as e:
                raise DataError(f"{self.path}: cannot open ({e.strerror or type(e).__name__})") from None
        return local.file

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_local"}
        if self._index_file is not None:
            state["_index"] = None  # reloaded from the cache file rather than pickled
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"JsonlSource({str(self.path)!r}, {self._len} records)"


class ArrayRecordSource(_RecordSource):
    """Random access to an ArrayRecord file whose records are JSON objects (UTF-8 bytes).

    Bad records are reported with their 0-based record index in place of a line number.
    """

    def __init__(self, path, fields: FieldTypes, bad: BadRecords | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES):
        from grain.sources import ArrayRecordDataSource  # grain takes ~1.5 s to import: only when needed

        self.path = epath.Path(path)
        self.fields = dict(fields)
        self.bad = BadRecords() if bad is None else bad
        self.max_record_bytes = max_record_bytes
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        try:  # grain's source reopens its readers lazily after pickling
            self._records = ArrayRecordDataSource(str(self.path))
        except (RuntimeError, ValueError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"{self.path}: not a readable ArrayRecord file ({reason})") from None
        if not len(self._records):
            raise DataError(f"{self.path}: empty file (no records)")

    def __len__(self) -> int:
        return len(self._records)

    def read(self, i) -> tuple[dict | None, str | None, int]:
        """(record, None, i) or (None, reason, i), reporting nothing (as JsonlSource.read)."""
        i = operator.index(i)
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} out of range for {self.path} ({len(self)} records)")
        return *parse_record(self._records[i], self.fields, self.max_record_bytes), i

    def __repr__(self) -> str:
        return f"ArrayRecordSource({str(self.path)!r}, {len(self)} records)"


def open_source(path, fields: FieldTypes, bad: BadRecords | None = None, cache_dir=None,
                max_record_bytes: int = MAX_RECORD_BYTES):
    """A JsonlSource or ArrayRecordSource, chosen by the file extension."""
    suffix = epath.Path(path).suffix
    if suffix == ".jsonl":
        return JsonlSource(path, fields, bad, cache_dir=cache_dir, max_record_bytes=max_record_bytes)
    if suffix in (".arrayrecord", ".array_record"):
        return ArrayRecordSource(path, fields, bad, max_record_bytes=max_record_bytes)
    raise DataError(f"{path}: unknown data format {suffix or '(no extension)'!r} "
                    "(expected .jsonl, .arrayrecord or .array_record)")
