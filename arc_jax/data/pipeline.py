"""The training input: positions -> records -> task samples -> static-shape batches, resumable.

The example at position p of process i is a pure function of (config, seed, p, i): the mixture
picks the record, and the task draws its randomness from a generator seeded by (seed, i, p).
Grain maps positions to samples (in worker processes when `worker_count` > 0); the main process
packs them in order. A batch takes samples until its rows are full; samples that first-fit
could not place wait for the next batch. The iterator state is the next unread position and the
positions still waiting, so a restored pipeline yields exactly the batches an uninterrupted one
would.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
from typing import Iterator

import numpy as np

from arc_jax.data import tasks
from arc_jax.data.bad_records import BadRecords, DataError
from arc_jax.data.config import DataConfig
from arc_jax.data.mixture import MixtureSampler, parse_sources
from arc_jax.data.packing import PackingShape, PackStats, TrainBatch, output_len, decoder_slots, pack_batch
from arc_jax.data.sources import open_source
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.model.config import EncoderConfig

# Corpora that config.data.generate can name, built on first use: "module:function(folder, **corpus)".
GENERATORS = {"tiny_corpus": "arc_jax.demo.synthetic:build_tiny_data"}

LOOKAHEAD = 2.0  # candidates drawn per batch, as a multiple of its capacity

TASK_FIELDS = {
    "pretrain": {"text": str},
    "finetune": {"question": str, "answer": (str, list)},
    "long_context": {"text": str, "instruction": str, "answer": (str, list)},
}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A position whose record made no sample; counted by the main process."""

    path: str
    line: int
    reason: str


class SampleMaker:
    """position -> Sample | Skipped. Picklable: grain workers each hold a copy.

    `data` has its paths resolved (prepare_data); `decoder_tokenizer` is the file of the tokenizer
    of the decoder the samples are for."""

    def __init__(self, data: DataConfig, decoder_tokenizer: str, encoder_cfg: EncoderConfig, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if data.task not in TASK_FIELDS:
            raise DataError(f"config.data.task = {data.task!r}: expected one of {', '.join(TASK_FIELDS)}")
        self.data, self.task = data, data.task
        self.seed, self.process_index = seed, process_index
        self.min_context = min(encoder_cfg.pooling_factors, default=1)
        self.encoder_tok = load_tokenizer(data.encoder_tokenizer)
        self.decoder_tok = load_tokenizer(decoder_tokenizer)
        self.specs = parse_sources(data.sources)
        fields = TASK_FIELDS[self.task]
        self.sources = [open_source(s.path, fields) for s in self.specs]
        self.mixture = MixtureSampler([len(s) for s in self.sources], [s.weight for s in self.specs], seed,
                                      process_index, process_count)

    def __call__(self, position: int) -> tuple[int, tasks.Sample | Skipped]:
        source_id, index = self.mixture.index(position)
        source = self.sources[source_id]
        rng = np.random.default_rng([self.seed, self.process_index, position])
        record, reason, line = source.read(index)
        if record is None:
            return position, Skipped(str(source.path), line, reason)
        try:
            sample = self._make(record, source_id, rng)
        except tasks.SkipRecord as e:
            return position, Skipped(str(source.path), line, str(e))
        if any(len(c) < self.min_context for c in sample.contexts):
            return position, Skipped(str(source.path), line, f"text shorter than the pooling factor {self.min_context}")
        return position, sample

    def _make(self, record: dict, source_id: int, rng: np.random.Generator) -> tasks.Sample:
        d, dec, enc = self.data, self.decoder_tok, self.encoder_tok
        if self.task == "pretrain":
            return tasks.pretraining(record["text"], rng, dec, enc, d.max_len, d.continuation_prob, d.chat_template)
        if self.task == "long_context":
            answers = tasks.QARecord.from_json({**record, "question": "", "passage": "-"}).answers
            return tasks.long_context(record["text"], record["instruction"], answers[int(rng.integers(len(answers)))],
                                      dec, enc)
        return tasks.few_shot(self._shots(source_id, rng) + [tasks.QARecord.from_json(record)], rng, dec, enc,
                              d.max_passages, d.max_len)

    def _shots(self, source_id: int, rng: np.random.Generator) -> list[tasks.QARecord]:
        """In-context examples from the same source; unusable ones are passed over, not counted."""
        source, shots = self.sources[source_id], []
        for _ in range(4 * self.specs[source_id].shots):
            if len(shots) == self.specs[source_id].shots:
                break
            record, _, _ = source.read(int(rng.integers(len(source))))
            if record is None:
                continue
            try:
                shots.append(tasks.QARecord.from_json(record))
            except tasks.SkipRecord:
                pass
        return shots


class BatchIterator:
    """Yields (TrainBatch, PackStats) forever; `get_state` / `set_state` make it resumable."""

    def __init__(self, maker: SampleMaker, encoder_cfg: EncoderConfig, shape: PackingShape, worker_count: int = 0,
                 strict: bool = False, bad: BadRecords | None = None):
        self.maker, self.cfg, self.shape, self.worker_count = maker, encoder_cfg, shape, worker_count
        self.bad = BadRecords(strict=strict) if bad is None else bad
        self.position, self.pending = 0, []
        self.total = PackStats()
        self.source_counts: collections.Counter[str] = collections.Counter()
        self._stream: Iterator | None = None

    def get_state(self) -> dict:
        return {"position": self.position, "pending": [p for p, _ in self.pending]}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])
        self.pending = [self.maker(int(p)) for p in state["pending"]]
        self._stream = None

    def _samples(self) -> Iterator:
        import grain

        if self._stream is None:
            # Grain's default read threads poll futures in a busy loop that costs more than our
            # samples take to make (measured: 57k -> 154k decoder tokens/s in one process).
            read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
            ds = grain.MapDataset.range(self.position, 1 << 62).map(self.maker).to_iter_dataset(read)
            if self.worker_count:
                from absl import flags

                if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; we do not use absl.app
                    flags.FLAGS.mark_as_parsed()
                ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
            self._stream = iter(ds)
        return self._stream

    def __iter__(self):
        return self

    def __next__(self) -> tuple[TrainBatch, PackStats]:
        s = self.shape
        candidates = list(self.pending)
        used_dec = sum(decoder_slots(x, self.cfg, s.encoder_len) for _, x in candidates)
        used_enc = sum(len(c) for _, x in candidates for c in x.contexts)
        stream = self._samples()
        # Draw a little more than fits so first-fit can choose; the rest waits for the next batch.
        dec_budget, enc_budget = LOOKAHEAD * s.decoder_rows * s.decoder_len, LOOKAHEAD * s.encoder_rows * s.encoder_len
        while used_dec <= dec_budget and used_enc <= enc_budget:
            position, item = next(stream)
            self.position = position + 1
            if isinstance(item, Skipped):
                self.bad.skip(item.path, item.line, item.reason)
                continue
            candidates.append((position, item))
            self.source_counts[self.maker.specs[self.maker.mixture.index(position)[0]].path] += 1
            used_dec += decoder_slots(item, self.cfg, s.encoder_len)
            used_enc += sum(len(c) for c in item.contexts)
        batch, leftover, stats = pack_batch([x for _, x in candidates], self.cfg, s)
        waiting = {id(x) for x in leftover}
        self.pending = [(p, x) for p, x in candidates if id(x) in waiting]
        if not stats.samples and self.pending:  # it cannot fit even an empty batch
            stats.counts["does_not_fit_a_batch"] += 1
            self.pending.pop(0)
        self.total.merge(stats)
        return batch, stats


def generate_corpus(name: str, folder: str, options) -> None:
    """Build generator `name`'s corpus in `folder` (a no-op when it is already there). The generator
    is named by module path: the synthetic people corpus belongs to the demo, and data/ imports no
    module above it."""
    if name not in GENERATORS:
        raise DataError(f"config.data.generate = {name!r}: the generators are {', '.join(map(repr, GENERATORS))}")
    module, function = GENERATORS[name].split(":")
    getattr(importlib.import_module(module), function)(folder, **options)


def prepare_data(data: DataConfig, sources: str | None = None) -> DataConfig:
    """`data` with its generated corpus built and "{data_dir}" resolved in its sources and encoder
    tokenizer. `sources` (e.g. the held-out data of config.eval) replaces data.sources when given."""
    if data.generate:
        generate_corpus(data.generate, data.folder, data.corpus)
    sources = data.sources if sources is None else sources
    return dataclasses.replace(data, sources=data.resolve(sources),
                               encoder_tokenizer=data.resolve(data.encoder_tokenizer))


def global_compressed_index(index: np.ndarray, row_offset: int, shard_rows: int, global_rows: int, out_len: int
                            ) -> np.ndarray:
    """A shard's compressed_index made to point into the table of the global batch.

    A shard packs its own `shard_rows` encoder rows, so its indices are r * out_len + s for its rows
    and shard_rows * out_len + t for the special vectors (see packing.py). In the global batch its
    rows start at `row_offset` and the special vectors follow all `global_rows` rows."""
    local_special = shard_rows * out_len
    special = index >= local_special
    moved = np.where(special, index - local_special + global_rows * out_len, index + row_offset * out_len)
    return np.where(index < 0, index, moved).astype(index.dtype)


class ShardedBatches:
    """This process's rows of the global batch: one BatchIterator per data shard it owns, side by side.

    The global batch (config.data.shape) is split into `n_shards` equal row blocks; shard j reads
    its own disjoint slice of the data (as process j of n_shards would) and packs block j. A
    process owns shards [p * k, (p + 1) * k) for k = n_shards / process_count, so a one-process
    run with config.data.shards = 2 yields exactly the global batches of a two-process run.
    """

    def __init__(self, iterators: dict[int, BatchIterator], shard_shape: PackingShape, n_shards: int):
        self.iterators, self.shard_shape, self.n_shards = iterators, shard_shape, n_shards

    @property
    def maker(self) -> SampleMaker:
        return next(iter(self.iterators.values())).maker

    @property
    def bad(self) -> BadRecords:
        return next(iter(self.iterators.values())).bad  # one shared counter (see build_batches)

    @property
    def total(self) -> PackStats:
        total = PackStats()
        for it in self.iterators.values():
            total.merge(it.total)
        return total

    @property
    def source_counts(self) -> collections.Counter:
        return sum((it.source_counts for it in self.iterators.values()), collections.Counter())

    def get_state(self) -> dict:
        return {"shards": {str(j): it.get_state() for j, it in self.iterators.items()}}

    def set_state(self, state: dict) -> None:
        shards = state.get("shards")
        if not isinstance(shards, dict) or set(shards) < {str(j) for j in self.iterators}:
            raise DataError(f"input-pipeline state holds shards {sorted(shards or {})}; this process needs "
                            f"{sorted(self.iterators)} of {self.n_shards} (config.data.shards changed?)")
        for j, it in self.iterators.items():
            it.set_state(shards[str(j)])

    def __iter__(self):
        return self

    def __next__(self) -> tuple[TrainBatch, PackStats]:
        parts, stats = [], PackStats()
        rows = self.shard_shape.encoder_rows
        for j, it in self.iterators.items():
            batch, part_stats = next(it)
            out_len = output_len(batch.encoder, self.shard_shape)
            index = global_compressed_index(batch.compressed_index, j * rows, rows, rows * self.n_shards, out_len)
            parts.append(batch._replace(compressed_index=index))
            stats.merge(part_stats)
        if len(parts) == 1:
            return parts[0], stats
        return _concatenate_rows(parts), stats


def _concatenate_rows(batches: list[TrainBatch]) -> TrainBatch:
    import jax

    return jax.tree.map(lambda *xs: np.concatenate(xs), *batches)


def build_batches(data: DataConfig, encoder_cfg: EncoderConfig, seed: int, decoder_tokenizer: str, *,
                  sources: str | None = None, process_index: int | None = None,
                  process_count: int | None = None) -> ShardedBatches:
    """This process's rows of the global training batches of a run's data section, for the decoder
    whose tokenizer is `decoder_tokenizer` ("{data_dir}" allowed; it tokenises the decoder side).
    `sources` replaces data.sources (held-out evaluation data). Shards: data.shards (0 = one per
    process)."""
    import jax

    data = prepare_data(data, sources)
    decoder_tokenizer = data.resolve(decoder_tokenizer)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    n_shards = data.shards or process_count
    shape = data.shape
    if n_shards % process_count or shape.encoder_rows % n_shards or shape.decoder_rows % n_shards:
        raise DataError(f"config.data.shards={n_shards} must be a multiple of the {process_count} process(es) and "
                        f"divide config.data.shape's encoder_rows={shape.encoder_rows} and "
                        f"decoder_rows={shape.decoder_rows}")
    shard_shape = dataclasses.replace(shape, encoder_rows=shape.encoder_rows // n_shards,
                                      decoder_rows=shape.decoder_rows // n_shards)
    per_process = n_shards // process_count
    bad = BadRecords(strict=data.strict)
    iterators = {}
    for j in range(process_index * per_process, (process_index + 1) * per_process):
        maker = SampleMaker(data, decoder_tokenizer, encoder_cfg, seed, j, n_shards)
        iterators[j] = BatchIterator(maker, encoder_cfg, shard_shape, data.worker_count, bad=bad)
    return ShardedBatches(iterators, shard_shape, n_shards)
