"""Streaming safetensors reading and writing with numpy (bfloat16 included, via ml_dtypes).

The safetensors library's numpy backend cannot hold bfloat16 and its writer needs every tensor
in memory at once; the format is simple enough (8-byte little-endian header size, a JSON header
of dtype/shape/offsets, then raw bytes) to read lazily through a memory map and to write one
tensor at a time. Files are checked against their header so truncation is reported, not crashed on.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np

from arc_jax.convert.errors import ConversionError
from arc_jax.convert.progress import advance

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """Lazy view of one .safetensors file: keys, shapes, and tensors read on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise ConversionError(f"{self.path}: file not found") from None
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConversionError(f"{self.path}: truncated file ({size} bytes, no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ConversionError(f"{self.path}: truncated file or not safetensors (header of {n} bytes in a {size}-byte file)")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConversionError(f"{self.path}: not a safetensors file (bad header: {e})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        self._data_start = 8 + n
        end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if self._data_start + end > size:
            raise ConversionError(
                f"{self.path}: truncated file ({size} bytes, the header describes {self._data_start + end})")
        self._map = np.memmap(self.path, np.uint8, "r") if size else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def dtype(self, key: str) -> np.dtype:
        return _DTYPES[self._entries[key]["dtype"]]

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> np.ndarray:
        """The tensor, backed by the memory map (copy it to keep it beyond the file)."""
        e = self._entries[key]
        begin, end = e["data_offsets"]
        raw = self._map[self._data_start + begin: self._data_start + end]
        return raw.view(_DTYPES[e["dtype"]]).reshape(e["shape"])


def write_safetensors(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]] | dict,
                      metadata: dict[str, str] | None = None) -> None:
    """Write tensors to `path`, one at a time. `tensors` may be a dict or a list of (key, array);
    arrays may be lazy (memory maps): each is read only while it is written."""
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, array in items:
        dtype = np.dtype(array.dtype)
        if dtype not in _NAMES:
            raise ConversionError(f"{key}: dtype {dtype} cannot be stored in safetensors")
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * dtype.itemsize
        header[key] = {"dtype": _NAMES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data aligned to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, array in items:
            data = np.ascontiguousarray(array)
            f.write(data.tobytes())
            advance(data.nbytes)


def iter_safetensors(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, SafetensorsFile]]:
    """(key, file holding it) over several shards; a key present twice is an error."""
    seen: dict[str, Path] = {}
    for p in paths:
        f = SafetensorsFile(p)
        for k in f.keys():
            if k in seen:
                raise ConversionError(f"{f.path}: key {k} also in {seen[k]}")
            seen[k] = f.path
            yield k, f
