"""A compressed corpus on disk: every text compressed once (`write_store`, `arc-jax index`) and read
back as `Compressed` blocks (`CompressedStore`), so the encoder leaves the request path.

    store = write_store(encoder, token_ids, "wiki_store", record_ids=ids, decoder_index=0)
    store = arc_jax.CompressedStore("wiki_store", encoder=enc)   # refused unless `enc` made it
    pipe.generate([["Document: ", store.by_id("Q42"), "\\nQuestion: ...\\nAnswer:"]])

Layout (zarr arrays through tensorstore, and JSON):
  store.json           format, the encoder's identity (config, compute dtype, sha256 of its weights),
                       decoder head, vector storage, sizes, the unit layout; written once, when
                       everything below but the vectors is in place
  ids.txt              the record ids, one a line
  records/             per record: offsets (first row), lengths (vectors, <Cont> aside), n_tokens,
                       lines (source line, or -1) and token_hashes (blake2b-128 of its encoder ids)
  vectors              [rows, dim] bfloat16 or float32; with product quantisation, codes
                       [rows, code_size] uint8 and codebooks [m, 2**bits, dim / m] float32 (pq.py)
  special              [1, dim] float32: the <Cont> vector, appended to each block on read (it
                       depends on the weights only, so it is stored once, exactly)
  progress/p{i}.json   the units process i knows are done

Work is cut into units of consecutive records. Each unit's rows start on a chunk boundary of the
vector array, so processes writing different units never write the same chunk file, and the
layout does not depend on how many processes write it. A unit is marked done in progress/ only
after its rows are written, so a killed index resumes at its first unfinished unit and ends with
the same arrays. Process i of n writes units [i * U / n, (i + 1) * U / n).

The vectors are those `Encoder.compress` returns: one text per record, compressed for one decoder
head. By default they are stored in the encoder's compute dtype, so a float32 encoder's store holds
exactly the float32 vectors online compression gives it (same packing, same programs: see
`_Compressor`), and a bf16 encoder's store its bf16 vectors; `vector_dtype="bfloat16"` halves a
float32 encoder's store at the cost of rounding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.convert.atomic import write_file_atomic
from arc_jax.errors import DataError
from arc_jax.inference import pq as pq_codec
from arc_jax.inference.api import Encoder, encoder_programs, run_packed
from arc_jax.inference.generate import Compressed
from arc_jax.model.pooling import pool_groups

FORMAT, VERSION = "arc_jax.compressed_store", 1
_RECORD_ARRAYS = ("offsets", "lengths", "n_tokens", "lines", "token_hashes")
_CHUNK_BYTES = 1 << 20  # one chunk file of the vector array holds about this many bytes
_UNIT_CHUNKS = 64  # a unit of work holds about this many chunks' worth of vectors


class UnknownRecord(DataError, KeyError):
    """`by_id` of an id the store does not hold (a KeyError, reported by the CLI as one line)."""

    def __str__(self) -> str:
        return str(self.args[0])


# --- Identity and sizes ------------------------------------------------------------------------

def weights_sha256(params) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes, in path order."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)} {array.dtype} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def encoder_identity(encoder: Encoder) -> dict:
    """What a store records of the encoder that made it: its config, the dtype it computes in and
    the hash of its weights in that dtype (a bf16 cast of a float32 checkpoint is another encoder:
    its vectors differ)."""
    return _json_normal({"config": encoder.config.to_dict(), "dtype": jnp.dtype(encoder.dtype).name,
                         "weights_sha256": weights_sha256(encoder.params)})


def token_hash(ids: Sequence[int]) -> bytes:
    """blake2b-128 of a text's encoder token ids: eval checks that a stored record is its document."""
    return hashlib.blake2b(np.asarray(ids, "<i4").tobytes(), digest_size=16).digest()


def compressed_length(config, n_tokens: int) -> int:
    """Vectors the encoder makes of a text of n_tokens tokens (special vectors aside): the pooling
    layers' group counts, or the memory tokens."""
    if config.n_memory_tokens:
        return config.n_memory_tokens
    for k in config.pooling_factors:
        n_tokens = len(pool_groups(n_tokens, k))
    return n_tokens


def _json_normal(value):
    return json.loads(json.dumps(value))


def _differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# --- Arrays on disk ----------------------------------------------------------------------------

def _spec(path: Path) -> dict:
    return {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}


def _create(path: Path, dtype: str, shape: Sequence[int], chunks: Sequence[int]):
    import tensorstore as ts

    dtype = dtype if dtype == "bfloat16" else np.dtype(dtype).str  # zarr names: "<f4", "|u1"
    return ts.open({**_spec(path), "metadata": {"dtype": dtype, "shape": list(shape), "chunks": list(chunks),
                                                "compressor": None}}, create=True, open=True).result()


def _open(path: Path):
    import tensorstore as ts

    return ts.open(_spec(path), open=True).result()


def _write_whole(path: Path, array: np.ndarray) -> None:
    dtype = "bfloat16" if array.dtype == jnp.bfloat16 else array.dtype
    _create(path, dtype, array.shape, [max(1, s) for s in array.shape])[...].write(array).result()


def _read_whole(path: Path) -> np.ndarray:
    return _open(path).read().result()


def _bf16_to_float32(array: np.ndarray) -> np.ndarray:
    """Exact, and faster than numpy's conversion of ml_dtypes' bfloat16."""
    return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


# --- Compression -------------------------------------------------------------------------------

class _Compressor:
    """`Encoder.compress` for one decoder head, its rows split over the local devices.

    Texts are packed exactly as Encoder.compress packs them (first-fit rows of a power-of-two
    length, at most `encoder.max_rows` rows a call, rows padded to a power of two), so on one
    device the vectors are bit for bit those of `encoder.compress(texts)`. With several local
    devices the rows are also padded to a multiple of their number and sharded over them (the
    weights replicated): each device compresses its rows."""

    def __init__(self, encoder: Encoder, decoder_index: int, out_dtype):
        self.encoder, self.decoder_index, self.out_dtype = encoder, decoder_index, out_dtype
        _, self._program = encoder_programs(encoder.module)
        devices = jax.local_devices()
        self.n_devices = len(devices)
        self.params, self.rows = encoder.params, None
        if self.n_devices > 1:
            from jax.sharding import NamedSharding, PartitionSpec

            from arc_jax.sharding import BATCH_AXES, make_mesh

            mesh = make_mesh((-1, 1, 1), devices)
            self.params = jax.device_put(encoder.params, NamedSharding(mesh, PartitionSpec()))
            self.rows = NamedSharding(mesh, PartitionSpec(BATCH_AXES))

    def __call__(self, texts: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Per text its vectors [m_i, dim] (in out_dtype), and the projected <Cont> [1, dim] float32."""
        special = None

        def run(inputs, one_text_per_row):
            nonlocal special
            if self.rows is not None:
                inputs = jax.device_put(inputs, self.rows)
            h, specials = self._program({"params": self.params}, inputs, decoder=self.decoder_index,
                                        one_text_per_row=one_text_per_row)
            special = np.asarray(specials.astype(jnp.float32))[1:2]  # the last chunk's, as before
            return np.asarray(h.astype(self.out_dtype))

        placed = run_packed(texts, self.encoder.config, self.encoder.max_rows, run, row_multiple=self.n_devices)
        return [h[p.row, p.start: p.start + p.length] for h, p in placed], special


# --- Writing -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Plan:
    """Where every record's rows go, and the units of work."""

    offsets: np.ndarray  # [n] int64
    units: list[tuple[int, int]]  # (first record, end record)
    n_rows: int


def _plan(lengths: np.ndarray, records_per_unit: int, chunk_rows: int) -> _Plan:
    offsets = np.zeros(len(lengths), np.int64)
    units, cursor = [], 0
    for first in range(0, len(lengths), records_per_unit):
        end = min(len(lengths), first + records_per_unit)
        cursor = -(-cursor // chunk_rows) * chunk_rows  # each unit starts a chunk
        offsets[first:end] = cursor + np.concatenate([[0], np.cumsum(lengths[first:end - 1])])
        cursor += int(lengths[first:end].sum())
        units.append((first, end))
    return _Plan(offsets, units, max(cursor, 1))


def _storage(encoder: Encoder, vector_dtype: str | None, pq: str | None, dim: int, train_vectors: int) -> dict:
    if pq is not None:
        if vector_dtype is not None:
            raise ValueError("give either a vector dtype or product quantisation, not both")
        m, bits = pq_codec.parse_pq(pq)
        if dim % m:
            raise ValueError(f"--pq {pq}: M={m} must divide the decoder width {dim}")
        return {"dtype": "pq", "m": m, "bits": bits, "code_size": pq_codec.code_size(m, bits),
                "train_vectors": train_vectors}
    dtype = jnp.dtype(encoder.dtype).name if vector_dtype is None else vector_dtype
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"vector dtype must be float32 or bfloat16, got {vector_dtype!r}")
    return {"dtype": dtype}


def _row_bytes(storage: dict, dim: int) -> int:
    return storage["code_size"] if storage["dtype"] == "pq" else dim * jnp.dtype(storage["dtype"]).itemsize


def _done_units(out: Path) -> set[int]:
    done: set[int] = set()
    for path in sorted((out / "progress").glob("p*.json")):
        try:
            done.update(json.loads(path.read_text(encoding="utf-8"))["done"])
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(f"{path}: unreadable progress record; remove the store and index again") from None
    return done


def _mark_done(out: Path, process_index: int, done: set[int]) -> None:
    """Written after a unit's rows are on disk: a restart skips the units listed."""
    (out / "progress").mkdir(exist_ok=True)
    write_file_atomic(out / "progress" / f"p{process_index}.json", json.dumps({"done": sorted(done)}).encode())


def write_store(encoder: Encoder, token_ids: Sequence[Sequence[int]], out: str | os.PathLike, *,
                record_ids: Sequence[str] | None = None, decoder_index: int = 0, pq: str | None = None,
                vector_dtype: str | None = None, batch_size: int = 64, progress: bool = True,
                lines: Sequence[int] | None = None, source: dict | None = None, pq_train_vectors: int = 1 << 16,
                records_per_unit: int | None = None, chunk_rows: int | None = None,
                process_index: int | None = None, process_count: int | None = None) -> CompressedStore | None:
    """Compress every text (encoder token ids, no BOS/EOS) for decoder head `decoder_index` and
    write the store to `out`; returns it opened, or None when other processes' units remain.

    record_ids: one unique string per text, without newlines (default "0", "1", ...). vector_dtype:
    "float32" or "bfloat16" (default: the encoder's compute dtype); pq "M:BITS" stores product-
    quantised codes instead, with codebooks trained (faiss) on the vectors of the first records, up
    to `pq_train_vectors`. lines: each record's line in its source file (what `arc-jax eval --store`
    matches records by); source: free JSON recorded in store.json (the CLI's --data, --field).

    Rerun on the same `out` with the same arguments, it resumes after the last finished unit and
    ends with the same store; other arguments or another encoder are refused. records_per_unit
    and chunk_rows (default: units of ~64 MiB in ~1 MiB chunk files) set the resume granularity;
    process_index / process_count default to JAX's processes, each writing its own units."""
    out = Path(out)
    if not 0 <= decoder_index < encoder.config.n_decoders:
        raise ValueError(f"decoder_index={decoder_index} but the encoder has {encoder.config.n_decoders} decoder "
                         "head(s)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = token_arrays(token_ids, encoder.config.backbone.vocab_size)
    if not texts:
        raise DataError(f"{out}: no text to index")
    ids = [str(i) for i in range(len(texts))] if record_ids is None else [str(r) for r in record_ids]
    _check_ids(ids, len(texts))
    lines = np.full(len(texts), -1, np.int64) if lines is None else np.asarray(lines, np.int64)
    if lines.shape != (len(texts),):
        raise ValueError(f"{len(lines)} lines for {len(texts)} texts")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process {process_index} of {process_count}")

    dim = encoder.config.projectors[decoder_index].out_dim
    storage = _storage(encoder, vector_dtype, pq, dim, pq_train_vectors)
    lengths = np.array([compressed_length(encoder.config, len(t)) for t in texts], np.int64)
    row_bytes = _row_bytes(storage, dim)
    chunk_rows = chunk_rows or int(min(1 << 16, max(16, 1 << (_CHUNK_BYTES // row_bytes).bit_length() - 1)))
    records_per_unit = records_per_unit or max(1, int(_UNIT_CHUNKS * chunk_rows / max(1.0, lengths.mean())))
    plan = _plan(lengths, records_per_unit, chunk_rows)
    records = {"offsets": plan.offsets, "lengths": lengths.astype(np.int32),
               "n_tokens": np.array([len(t) for t in texts], np.int32), "lines": lines,
               "token_hashes": np.frombuffer(b"".join(token_hash(t) for t in texts), np.uint8).reshape(-1, 16)}
    records_digest = hashlib.sha256(("\n".join(ids) + "\n").encode())
    for name in _RECORD_ARRAYS:
        records_digest.update(np.ascontiguousarray(records[name]).tobytes())
    meta = _json_normal({
        "format": FORMAT, "version": VERSION, "encoder": encoder_identity(encoder), "decoder_index": decoder_index,
        "task": "continuation", "special": bool(encoder.config.cont_tok), "dim": dim, "storage": storage,
        "n_records": len(texts), "n_vectors": int(lengths.sum()), "n_tokens": int(records["n_tokens"].sum()),
        "n_rows": plan.n_rows, "chunk_rows": chunk_rows, "records_per_unit": records_per_unit,
        "n_units": len(plan.units), "records_sha256": records_digest.hexdigest(), "source": source})
    out_dtype = jnp.bfloat16 if storage["dtype"] == "bfloat16" else jnp.float32
    compressor = _Compressor(encoder, decoder_index, out_dtype)

    if (out / "store.json").exists():
        _check_same(out, meta)
    else:
        _start(out, meta, records, ids, texts, compressor, process_index, process_count)
    array = _open(out / ("codes" if storage["dtype"] == "pq" else "vectors"))
    codebooks = _read_whole(out / "codebooks") if storage["dtype"] == "pq" else None

    done = _done_units(out)
    first_unit = process_index * len(plan.units) // process_count
    mine = range(first_unit, (process_index + 1) * len(plan.units) // process_count)
    todo = [u for u in mine if u not in done]
    _write_units(out, plan, todo, texts, compressor, array, codebooks, storage, batch_size, process_index, done,
                 progress, total=sum(plan.units[u][1] - plan.units[u][0] for u in mine))
    if process_count > 1 and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("arc_jax.store.done")
    return CompressedStore(out) if len(_done_units(out)) == len(plan.units) else None


def token_arrays(token_ids: Sequence[Sequence[int]], vocab_size: int) -> list[np.ndarray]:
    """Each text's ids as an int32 array (4 bytes a token: a corpus is held whole while it is
    indexed), checked as Encoder.compress checks them."""
    if isinstance(token_ids, np.ndarray) and token_ids.ndim == 1:
        raise TypeError("token_ids: expected a list of token-id lists, got a single 1-D array")
    texts = []
    for i, ids in enumerate(token_ids):
        array = np.asarray(ids, np.int64).reshape(-1)
        if not len(array):
            raise ValueError(f"token_ids[{i}] is empty")
        if array.min() < 0 or array.max() >= vocab_size:
            bad = array[(array < 0) | (array >= vocab_size)][0]
            raise ValueError(f"token_ids[{i}] holds token id {bad} outside the vocabulary [0, {vocab_size})")
        texts.append(array.astype(np.int32))
    return texts


def _check_ids(ids: list[str], n: int) -> None:
    if len(ids) != n:
        raise ValueError(f"{len(ids)} record ids for {n} texts")
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if not rid or "\n" in rid or "\r" in rid:
            raise ValueError(f"record id {i} ({rid!r}) must be a non-empty string without line breaks")
        if rid in seen:
            raise ValueError(f"record id {rid!r} appears twice")
        seen.add(rid)


def _check_same(out: Path, meta: dict) -> None:
    """A store being resumed must have been started with the same encoder, corpus and options."""
    saved = _read_meta(out)
    changed = _differences(saved, meta)
    if changed:
        if any(c.startswith("encoder.") for c in changed):
            raise DataError(_identity_mismatch(out, saved["encoder"], meta["encoder"]))
        raise DataError(f"{out} holds a store started with other inputs or options ({', '.join(changed[:6])} "
                        "differ): use another --out, or remove it to start over")


def _start(out: Path, meta: dict, records: dict, ids: list[str], texts, compressor: _Compressor,
           process_index: int, process_count: int) -> None:
    """Everything but the vectors, store.json last. Process 0 does it; the others wait for it."""
    multiprocess = process_count > 1 and jax.process_count() > 1
    if process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        if any(p.name != "progress" for p in out.iterdir()):
            if not (out / "records").is_dir():  # a half-started store of ours has records/; anything else is not ours
                raise DataError(f"{out}: exists and is not a compressed store; use another --out")
        storage, dim = meta["storage"], meta["dim"]
        for name, array in records.items():
            _write_whole(out / "records" / name, array)
        write_file_atomic(out / "ids.txt", ("\n".join(ids) + "\n").encode())
        if storage["dtype"] == "pq":
            sample, special = _training_vectors(texts, compressor, storage["train_vectors"])
            codebooks = pq_codec.train_codebooks(sample, storage["m"], storage["bits"])
            _write_whole(out / "codebooks", codebooks)
            _create(out / "codes", "uint8", [meta["n_rows"], storage["code_size"]],
                    [meta["chunk_rows"], storage["code_size"]])
        else:
            _, special = compressor([texts[0]])
            _create(out / "vectors", storage["dtype"], [meta["n_rows"], dim], [meta["chunk_rows"], dim])
        _write_whole(out / "special", special.astype(np.float32))
        write_file_atomic(out / "store.json", (json.dumps(meta, indent=1) + "\n").encode())
    if multiprocess:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("arc_jax.store.started")
    if not (out / "store.json").exists():
        raise DataError(f"{out}: not started yet; process 0 starts a store (process {process_index} of "
                        f"{process_count} was run first)")
    _check_same(out, meta)


def _training_vectors(texts, compressor: _Compressor, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the first records, up to `limit` (what the codebooks are trained on)."""
    blocks, total, special = [], 0, None
    for start in range(0, len(texts), 64):
        batch, special = compressor(texts[start: start + 64])
        blocks += batch
        total += sum(len(b) for b in batch)
        if total >= limit:
            break
    return np.concatenate(blocks)[:limit], special


def _write_units(out: Path, plan: _Plan, todo: list[int], texts, compressor: _Compressor, array, codebooks,
                 storage: dict, batch_size: int, process_index: int, done: set[int], progress: bool,
                 total: int) -> None:
    from tqdm import tqdm

    remaining = sum(plan.units[u][1] - plan.units[u][0] for u in todo)
    bar = tqdm(total=total, initial=total - remaining, desc="index", unit="text", disable=not progress)
    for unit in todo:
        first, end = plan.units[unit]
        for start in range(first, end, batch_size):
            stop = min(end, start + batch_size)
            blocks, _ = compressor(texts[start:stop])
            expected = [compressed_length(compressor.encoder.config, len(t)) for t in texts[start:stop]]
            if [len(b) for b in blocks] != expected:  # the layout was planned from these lengths
                raise RuntimeError(f"records {start}..{stop - 1}: compressed to {[len(b) for b in blocks]} vectors, "
                                   f"planned {expected}")
            rows = np.concatenate(blocks)
            if codebooks is not None:
                rows = pq_codec.encode(rows, codebooks, storage["bits"])
            row = int(plan.offsets[start])
            array[row: row + len(rows)].write(rows).result()
            bar.update(stop - start)
        done.add(unit)
        _mark_done(out, process_index, done)
    bar.close()


# --- Reading -----------------------------------------------------------------------------------

def _read_meta(path: Path) -> dict:
    file = Path(path) / "store.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not a compressed store (no store.json; arc-jax index writes one)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{file}: not a compressed store's metadata")
    if meta.get("version") != VERSION:
        raise DataError(f"{file}: store format version {meta.get('version')}; this arc_jax reads {VERSION}")
    return meta


def _identity_mismatch(path: Path, stored: dict, mine: dict) -> str:
    configs = _differences(stored.get("config"), mine.get("config"))
    what = f"; configs differ in {', '.join(configs[:4])}" if configs else ""
    return (f"{path} was written by another encoder: weights sha256 {stored.get('weights_sha256', '?')[:16]} "
            f"({stored.get('dtype')}), this encoder's {mine['weights_sha256'][:16]} ({mine['dtype']}){what}; "
            "index the corpus with this encoder (and --dtype) or use the encoder that wrote it")


class CompressedStore:
    """A corpus compressed once, on disk: `store[i]` is record i's `Compressed` block (with <Cont>
    when the encoder has it), `store.by_id(id)` the same by its id, `store.read(indices)` many in
    one read. Blocks go wherever `ARCPipeline.compress` results do.

    With `encoder`, the store is refused (DataError, one line naming both weight hashes) unless
    that encoder, in that dtype, wrote it. A store whose index has not finished is refused too."""

    def __init__(self, path: str | os.PathLike, encoder: Encoder | None = None):
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        done = _done_units(self.path)
        if len(done) < self.meta["n_units"]:
            raise DataError(f"{self.path}: incomplete, {len(done)} of {self.meta['n_units']} units written; rerun "
                            "the same arc-jax index command to finish it")
        if encoder is not None:
            self.check_encoder(encoder)
        arrays = {name: _read_whole(self.path / "records" / name) for name in _RECORD_ARRAYS}
        self.offsets, self.lengths = arrays["offsets"], arrays["lengths"]
        self.n_tokens, self.lines, self.token_hashes = arrays["n_tokens"], arrays["lines"], arrays["token_hashes"]
        self._special = _read_whole(self.path / "special") if self.meta["special"] else None
        if self.pq:
            self._array = _open(self.path / "codes")
            self._codebooks = jnp.asarray(_read_whole(self.path / "codebooks"))  # on the device, once
        else:
            self._array = _open(self.path / "vectors")
        self._ids: list[str] | None = None
        self._by_id: dict[str, int] | None = None
        self._by_line: dict[int, int] | None = None

    # What it holds.
    def __len__(self) -> int:
        return self.meta["n_records"]

    @property
    def decoder_index(self) -> int:
        return self.meta["decoder_index"]

    @property
    def dim(self) -> int:
        return self.meta["dim"]

    @property
    def pq(self) -> bool:
        return self.meta["storage"]["dtype"] == "pq"

    @property
    def storage(self) -> str:
        """"bfloat16", "float32" or "pq M:BITS"."""
        s = self.meta["storage"]
        return f"pq {s['m']}:{s['bits']}" if self.pq else s["dtype"]

    @property
    def pooling_factors(self) -> tuple[int, ...]:
        return tuple(-r for r in self.meta["encoder"]["config"]["compress_rates"])

    @property
    def encoder_identity(self) -> dict:
        return self.meta["encoder"]

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = (self.path / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        return self._ids

    @property
    def bytes_per_vector(self) -> int:
        """Bytes one stored vector takes: 2 or 4 per value, or the PQ code size."""
        return _row_bytes(self.meta["storage"], self.dim)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored vectors (the <Cont> vector and codebooks included, alignment gaps and
        per-record tables not)."""
        extra = 4 * self.dim * bool(self.meta["special"])
        if self.pq:
            s = self.meta["storage"]
            extra += 4 * self.dim * 2 ** s["bits"]
        return self.meta["n_vectors"] * self.bytes_per_vector + extra

    @property
    def bytes_per_token(self) -> float:
        """Stored vector bytes per source (encoder) token, the <Cont> vector and codebooks aside."""
        return self.meta["n_vectors"] * self.bytes_per_vector / self.meta["n_tokens"]

    def check_encoder(self, encoder: Encoder) -> None:
        """DataError (one line, both weight hashes) unless `encoder` wrote this store."""
        mine = encoder_identity(encoder)
        if _differences(self.meta["encoder"], mine):
            raise DataError(_identity_mismatch(self.path, self.meta["encoder"], mine))

    # Reading blocks.
    def __getitem__(self, i: int) -> Compressed:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"store indices are ints, got {type(i).__name__} (read(indices) reads many)")
        return self.read([i])[0]

    def by_id(self, record_id: str) -> Compressed:
        return self[self.index_of(record_id)]

    def index_of(self, record_id: str) -> int:
        if self._by_id is None:
            self._by_id = {rid: i for i, rid in enumerate(self.ids)}
        if str(record_id) not in self._by_id:
            raise UnknownRecord(f"{self.path}: no record with id {record_id!r} ({len(self)} records)")
        return self._by_id[str(record_id)]

    def index_of_line(self, line: int) -> int | None:
        """The record indexed from this line of the source file, or None."""
        if self._by_line is None:
            self._by_line = {int(n): i for i, n in enumerate(self.lines) if n >= 0}
        return self._by_line.get(int(line))

    def read(self, indices: Sequence[int]) -> list[Compressed]:
        """Blocks of these records, in order: one tensorstore read of all their rows."""
        index = np.asarray(indices, np.int64).reshape(-1)
        if not len(index):
            return []
        if ((index < -len(self)) | (index >= len(self))).any():
            raise IndexError(f"store index out of range: {len(self)} records")
        index = index % len(self)
        lengths = self.lengths[index].astype(np.int64)
        ends = np.cumsum(lengths)
        rows = np.repeat(self.offsets[index] - (ends - lengths), lengths) + np.arange(ends[-1])
        data = self._array.oindex[rows].read().result()
        if self.pq:
            vectors = np.asarray(pq_codec.decode(data, self._codebooks, self.meta["storage"]["bits"]))
        elif data.dtype == jnp.bfloat16:
            vectors = _bf16_to_float32(data)
        else:
            vectors = np.asarray(data, np.float32)
        out = []
        for i, block in zip(index, np.split(vectors, ends[:-1])):
            if self._special is not None:
                block = np.concatenate([block, self._special])
            out.append(Compressed(block, int(self.n_tokens[i]), self.decoder_index))
        return out

    def __repr__(self) -> str:
        return (f"CompressedStore({str(self.path)!r}: {len(self)} records, {self.meta['n_vectors']} vectors of "
                f"{self.dim} ({self.storage}), decoder head {self.decoder_index})")
