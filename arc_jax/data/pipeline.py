"""The training input: positions -> records -> task samples -> static-shape batches, resumable.

The samples of position p of process i are a pure function of (config, seed, p, i): the mixture
picks the record, and the task draws its randomness from a generator seeded by (seed, i, p). A
record makes one sample, or, in the reference pretraining layout, one per window of the document
(config.data.layout). Grain maps positions to samples (in worker processes when `worker_count` >
0); the main process packs them in order. A batch takes samples until its rows are full; samples
that first-fit could not place wait for the next batch. With `single_task_batches` the samples
wait in one pool per task and a batch is packed from the first pool to fill (the reference keeps a
row buffer per task, so each step is one task). The iterator state is the next unread position
and the (position, window) of the samples still waiting, so a restored pipeline yields exactly the
batches an uninterrupted one would.

A pipeline built with `remember=k` also keeps the (position, window) keys of the samples its last k
batches hold (`recent()`, saved in its state), and any pipeline can `replay` such keys: it re-makes
those records with its own SampleMaker (its decoder's tokenizer) and packs them in the same static
shape, without moving its own state. The trainer's "alternate" decoder schedule feeds decoder 1
this way with the records of decoder 0's latest batch.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import pathlib
from typing import Iterator

import numpy as np

from arc_jax.data import tasks
from arc_jax.data.bad_records import BadRecords, DataError
from arc_jax.data.config import DataConfig
from arc_jax.data.mixture import MixtureSampler, parse_sources
from arc_jax.data.packing import (PackingShape, PackStats, TrainBatch, decoder_slots, loss_tokens, output_len,
                                  pack_batch, pack_batch_placed)
from arc_jax.data.sources import open_source
from arc_jax.data.tokenizers import load_tokenizer
from arc_jax.model.config import EncoderConfig

# Corpora that config.data.generate can name, built on first use: "module:function(folder, **corpus)".
GENERATORS = {"tiny_corpus": "arc_jax.demo.synthetic:build_tiny_data",
              "paper_shaped": "arc_jax.tools.paper_shaped_data:build"}

LOOKAHEAD = 2.0  # candidates drawn per batch, as a multiple of its capacity

TASK_FIELDS = {
    "pretrain": {"text": str},
    "finetune": {"question": str, "answer": (str, list)},
    "long_context": {"text": str, "instruction": str, "answer": (str, list)},
}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A position whose record made no sample; counted by the main process as a bad record."""

    path: str
    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Made:
    """A position's samples (in window order) and why some of its windows or the record itself were
    passed over though not bad (counted by the main process in PackStats.counts)."""

    samples: tuple[tasks.Sample, ...]
    passed_over: tuple[str, ...] = ()


RAND_FILTERED = "rand_filtered"  # the record's "rand" >= config.data.rand_filter
# A sample whose compressed texts include one of at most one token is dropped, as the reference's data
# loader drops it (embed_llm/data/data_loader.py); a text shorter than the pooling factor is one group.
ONE_TOKEN_CONTEXT = "context_of_at_most_one_token"


class SampleMaker:
    """position -> (position, Made | Skipped). Picklable: grain workers each hold a copy.

    `data` has its paths resolved (prepare_data); `decoder_tokenizer` is the file of the tokenizer
    of the decoder the samples are for."""

    def __init__(self, data: DataConfig, decoder_tokenizer: str, seed: int, process_index: int = 0,
                 process_count: int = 1):
        if data.task not in TASK_FIELDS:
            raise DataError(f"config.data.task = {data.task!r}: expected one of {', '.join(TASK_FIELDS)}")
        self.data, self.task = data, data.task
        self.seed, self.process_index = seed, process_index
        self.encoder_tok = load_tokenizer(data.encoder_tokenizer)
        self.decoder_tok = load_tokenizer(decoder_tokenizer)
        self.same_tokenizer = _same_file(self.encoder_tok.path, self.decoder_tok.path)
        self.specs = parse_sources(data.sources)
        fields = TASK_FIELDS[self.task]
        self.sources = [open_source(s.path, fields) for s in self.specs]
        self.mixture = MixtureSampler([len(s) for s in self.sources], [s.weight for s in self.specs], seed,
                                      process_index, process_count)

    def __call__(self, position: int) -> tuple[int, Made | Skipped]:
        source_id, index = self.mixture.index(position)
        source = self.sources[source_id]
        rng = np.random.default_rng([self.seed, self.process_index, position])
        record, reason, line = source.read(index)
        if record is None:
            return position, Skipped(str(source.path), line, reason)
        try:
            if self._filtered(record):
                return position, Made((), (RAND_FILTERED,))
            samples = self._make(record, source_id, rng)
        except tasks.SkipRecord as e:
            return position, Skipped(str(source.path), line, str(e))
        kept = tuple(s for s in samples if all(len(c) > 1 for c in s.contexts))
        if not kept:
            return position, Skipped(str(source.path), line, "a text to compress of at most one token")
        return position, Made(kept, (ONE_TOKEN_CONTEXT,) * (len(samples) - len(kept)))

    def _filtered(self, record: dict) -> bool:
        """The reference's web-crawl filter: a record whose "rand" is >= rand_filter is not read."""
        if not self.data.rand_filter or "rand" not in record:
            return False
        try:
            return float(record["rand"]) >= self.data.rand_filter
        except (TypeError, ValueError):
            raise tasks.SkipRecord(f"field 'rand' is {record['rand']!r}, not a number") from None

    def _make(self, record: dict, source_id: int, rng: np.random.Generator) -> list[tasks.Sample]:
        d, dec, enc = self.data, self.decoder_tok, self.encoder_tok
        if self.task == "pretrain":
            return tasks.pretraining_samples(record["text"], rng, dec, enc, max_len=d.max_len,
                                             continuation_prob=d.continuation_prob, chat=d.chat_template,
                                             layout=d.layout, encoder_bos_eos=d.encoder_bos_eos,
                                             same_tokenizer=self.same_tokenizer)
        if self.task == "long_context":
            answers = tasks.QARecord.from_json({**record, "question": "", "passage": "-"}).answers
            return [tasks.long_context(record["text"], record["instruction"], answers[int(rng.integers(len(answers)))],
                                       dec, enc)]
        return [tasks.few_shot(self._shots(source_id, rng) + [tasks.QARecord.from_json(record)], rng, dec, enc,
                               d.max_passages, max_passage_len=d.max_len, answer_layout=d.answer_layout,
                               layout=d.layout)]

    def _shots(self, source_id: int, rng: np.random.Generator) -> list[tasks.QARecord]:
        """In-context examples from the same source; unusable or rand-filtered ones are passed over,
        not counted."""
        source, shots = self.sources[source_id], []
        for _ in range(4 * self.specs[source_id].shots):
            if len(shots) == self.specs[source_id].shots:
                break
            record, _, _ = source.read(int(rng.integers(len(source))))
            if record is None:
                continue
            try:
                if not self._filtered(record):
                    shots.append(tasks.QARecord.from_json(record))
            except tasks.SkipRecord:
                pass
        return shots


def _same_file(a: str, b: str) -> bool:
    """Whether two tokenizer files hold the same bytes (the reference's "both Llama" test)."""
    a, b = pathlib.Path(a), pathlib.Path(b)
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


class BatchIterator:
    """Yields (TrainBatch, PackStats) forever; `get_state` / `set_state` make it resumable.

    `remember`: how many of its latest batches' sample keys it keeps (`recent`) for `replay` by
    another decoder's iterator; 0 keeps none (and the state has no "recent")."""

    def __init__(self, maker: SampleMaker, encoder_cfg: EncoderConfig, shape: PackingShape, worker_count: int = 0,
                 strict: bool = False, bad: BadRecords | None = None, remember: int = 0):
        self.maker, self.cfg, self.shape, self.worker_count = maker, encoder_cfg, shape, worker_count
        self.bad = BadRecords(strict=strict) if bad is None else bad
        self.position, self.pending = 0, []
        self.remember = remember
        # The (position, window) keys of the samples each of the last `remember` batches holds, in packing order.
        self.recent: collections.deque[list[tuple[int, int]]] = collections.deque(maxlen=remember or None)
        self.total = PackStats()
        self.source_counts: collections.Counter[str] = collections.Counter()
        self._stream: Iterator | None = None

    def get_state(self) -> dict:
        state = {"position": self.position, "pending": [list(key) for key, _ in self.pending]}
        if self.remember:
            state["recent"] = [[list(key) for key in keys] for keys in self.recent]
        return state

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])
        # A state saved without "recent" (by a pipeline that kept none, or before it existed): nothing to replay.
        self.recent.clear()
        if self.remember:
            self.recent.extend([(int(p), int(w)) for p, w in keys] for keys in state.get("recent", []))
        keys = [(entry, 0) if isinstance(entry, int) else entry for entry in state["pending"]]  # int: before windows
        self.pending = list(self._remake(keys))
        lost = next((key for key, sample in self.pending if sample is None), None)
        if lost is not None:
            raise DataError(f"input-pipeline state: pending sample {lost} (record position, window) is not made by "
                            "this data any more (data.sources or the data's settings changed?)")
        self._stream = None

    def _remake(self, keys) -> Iterator[tuple[tuple[int, int], tasks.Sample | None]]:
        """Each (position, window) key with its sample made again by this iterator's maker (a record
        made once however many of its windows are named), or None where the maker makes no such
        sample (a skipped record, or fewer windows)."""
        made: dict[int, Made | Skipped] = {}
        for position, window in keys:
            position, window = int(position), int(window)
            if position not in made:
                made[position] = self.maker(position)[1]
            item = made[position]
            missing = isinstance(item, Skipped) or window >= len(item.samples)
            yield (position, window), None if missing else item.samples[window]

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

    def _pool(self, sample: tasks.Sample) -> str:
        """The pool a sample waits in: its task with single_task_batches, else one for all."""
        return sample.task if self.maker.data.single_task_batches else "all"

    def _full_pool(self, used: dict[str, list[int]]) -> str | None:
        """The first pool whose candidates exceed the lookahead budget, or None while none does."""
        s = self.shape
        # Draw a little more than fits so first-fit can choose; the rest waits for the next batch.
        budgets = (LOOKAHEAD * s.decoder_rows * s.decoder_len, LOOKAHEAD * s.encoder_rows * s.encoder_len,
                   LOOKAHEAD * s.decoder_rows * s.loss_slots if s.loss_slots else float("inf"))
        return next((pool for pool, use in used.items() if any(u > b for u, b in zip(use, budgets))), None)

    def __next__(self) -> tuple[TrainBatch, PackStats]:
        candidates: list[tuple[tuple[int, int], tasks.Sample]] = []
        used: dict[str, list[int]] = {}  # pool -> [decoder slots, encoder tokens, loss tokens] of its candidates
        passed_over: collections.Counter[str] = collections.Counter()

        def add(key: tuple[int, int], sample: tasks.Sample) -> None:
            candidates.append((key, sample))
            pool = used.setdefault(self._pool(sample), [0, 0, 0])
            pool[0] += decoder_slots(sample, self.cfg, self.shape.encoder_text_len)
            pool[1] += sum(len(c) for c in sample.contexts)
            pool[2] += loss_tokens(sample)

        for key, sample in self.pending:
            add(key, sample)
        stream = self._samples()
        while (full := self._full_pool(used)) is None:
            position, item = next(stream)
            self.position = position + 1
            if isinstance(item, Skipped):
                self.bad.skip(item.path, item.line, item.reason)
                continue
            passed_over.update(item.passed_over)
            for window, sample in enumerate(item.samples):
                add((position, window), sample)
            self.source_counts[self.maker.specs[self.maker.mixture.index(position)[0]].path] += len(item.samples)
        chosen_keys, chosen = zip(*[(k, x) for k, x in candidates if self._pool(x) == full])
        batch, leftover, stats, placed = pack_batch_placed(chosen, self.cfg, self.shape)
        if self.remember:
            self.recent.append([chosen_keys[i] for i in placed])
        waiting = {id(x) for x in leftover}
        self.pending = [(k, x) for k, x in candidates if self._pool(x) != full or id(x) in waiting]
        if not stats.samples and chosen:  # the pool cannot fit even an empty batch
            stats.counts["does_not_fit_a_batch"] += 1
            self.pending = [(k, x) for k, x in self.pending if x is not chosen[0]]
        stats.counts.update(passed_over)
        self.total.merge(stats)
        return batch, stats

    def replay(self, keys: list[tuple[int, int]]) -> tuple[TrainBatch, PackStats]:
        """The batch of the samples `keys` name ((position, window), in order: another decoder's
        iterator's `recent` batch), made by this iterator's SampleMaker and packed in this shape. The
        iterator's state does not move. Nothing is silent: a key whose record or window this maker
        does not make is counted as "replay_not_made", a sample that does not fit the batch (its
        tokens for this decoder take more slots) as "replay_did_not_fit" (or "sample_too_long")."""
        remade = [sample for _, sample in self._remake(keys)]
        samples = [sample for sample in remade if sample is not None]
        not_made = len(remade) - len(samples)
        batch, leftover, stats = pack_batch(samples, self.cfg, self.shape)
        del stats.counts["carried_over"]  # nothing waits: a replayed batch is made once
        if leftover:
            stats.counts["replay_did_not_fit"] += len(leftover)
        if not_made:
            stats.counts["replay_not_made"] += not_made
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
        return self._global({j: next(it) for j, it in self.iterators.items()})

    def recent(self) -> list[dict[int, list[tuple[int, int]]]]:
        """The sample keys of each of the last `remember` batches (oldest first), per shard: what
        `replay` takes, one batch at a time."""
        n = min(len(it.recent) for it in self.iterators.values())
        return [{j: it.recent[len(it.recent) - n + b] for j, it in self.iterators.items()} for b in range(n)]

    def replay(self, keys: dict[int, list[tuple[int, int]]]) -> tuple[TrainBatch, PackStats]:
        """The global batch of one `recent()` entry (of another decoder's pipeline) re-made by this
        pipeline's SampleMakers: each shard replays its own keys (BatchIterator.replay)."""
        return self._global({j: it.replay(keys[j]) for j, it in self.iterators.items()})

    def _global(self, shard_batches: dict[int, tuple[TrainBatch, PackStats]]) -> tuple[TrainBatch, PackStats]:
        """This process's rows of the global batch from its shards' batches."""
        parts, stats = [], PackStats()
        rows = self.shard_shape.encoder_rows
        for j, (batch, part_stats) in shard_batches.items():
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
                  process_count: int | None = None, remember: int = 0) -> ShardedBatches:
    """This process's rows of the global training batches of a run's data section, for the decoder
    whose tokenizer is `decoder_tokenizer` ("{data_dir}" allowed; it tokenises the decoder side).
    `sources` replaces data.sources (held-out evaluation data, whose batches mix tasks so that
    every evaluation reports each task's loss). Shards: data.shards (0 = one per process).
    `remember`: batches whose sample keys the pipeline keeps for another's `replay` (BatchIterator)."""
    import jax

    if sources is not None:
        data = dataclasses.replace(data, single_task_batches=False)
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
    if shape.has_attention_rows and shape.attention_groups % n_shards:
        raise DataError(f"config.data.shape.attention_groups={shape.attention_groups} is not a multiple of the "
                        f"{n_shards} data shard(s) (config.data.shards, 0 = one per process): each shard packs "
                        "whole groups of rows, each with its attention rows")
    # Each shard packs its block of rows, and of their groups (attention rows are per group).
    shard_shape = dataclasses.replace(shape, encoder_rows=shape.encoder_rows // n_shards,
                                      decoder_rows=shape.decoder_rows // n_shards,
                                      attention_groups=max(1, shape.attention_groups // n_shards))
    per_process = n_shards // process_count
    bad = BadRecords(strict=data.strict)
    iterators = {}
    for j in range(process_index * per_process, (process_index + 1) * per_process):
        maker = SampleMaker(data, decoder_tokenizer, seed, j, n_shards)
        iterators[j] = BatchIterator(maker, encoder_cfg, shard_shape, data.worker_count, bad=bad, remember=remember)
    return ShardedBatches(iterators, shard_shape, n_shards)
