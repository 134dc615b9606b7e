"""Weighted mixtures of sources: the reference's `path[:weight[:shots]]` list, and a stateless sampler.

The sampler maps a position in a process's example stream to (source, record) as a pure function of
(seed, position, process index, process count), so resuming at step s needs nothing but s.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re

import numpy as np

from arc_jax.data.bad_records import DataError

BLOCK = 1 << 14  # positions per block; each block holds every source exactly its quota of times
_SYNTAX = "expected a comma-separated list of path[:weight[:shots]]"
_FILE_EXTENSION = re.compile(r"\.[A-Za-z_]\w*$")  # 'a.jsonl' ends a path; '2', '0.5', '1e-3' are fields


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    path: str
    weight: float = 1.0
    shots: int = 0  # in-context examples drawn from the same source (fine-tuning)


def parse_sources(spec: str) -> list[SourceSpec]:
    """Parses "a.jsonl:2,gs://b/c.jsonl:1:5". Only trailing ':fields' are parsed, so 'gs://' stays a path."""
    if not spec or not spec.strip():
        raise DataError(f"no data sources given ({_SYNTAX})")
    return [_parse_entry(entry.strip(), spec) for entry in spec.split(",")]


def _parse_entry(entry: str, spec: str) -> SourceSpec:
    if not entry:
        raise DataError(f"empty entry in data sources {spec!r} ({_SYNTAX})")
    parts = entry.split(":")
    fields = []
    while len(parts) > 1 and len(fields) < 3 and "/" not in parts[-1] and not _FILE_EXTENSION.search(parts[-1]):
        fields.insert(0, parts.pop())
    path = ":".join(parts)
    if len(fields) > 2 or not path:
        raise DataError(f"cannot parse data source {entry!r} ({_SYNTAX})")
    weight, shots = 1.0, 0
    if fields:
        try:
            weight = float(fields[0])
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise DataError(f"bad weight {fields[0]!r} in data source {entry!r}: expected a positive number")
    if len(fields) == 2:
        try:
            shots = int(fields[1])
        except ValueError:
            shots = -1
        if shots < 0:
            raise DataError(f"bad shots {fields[1]!r} in data source {entry!r}: expected an integer >= 0")
    return SourceSpec(path, weight, shots)


def _quotas(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to `weights`, at least 1 each, summing to `total` (largest remainder)."""
    share = weights / weights.sum() * total
    quotas = np.maximum(np.floor(share), 1).astype(np.int64)
    while (gap := total - int(quotas.sum())) != 0:
        if gap > 0:
            quotas[np.argmax(share - quotas)] += 1
        else:  # the minimum of 1 overshot: take back from the most over-served source that can spare one
            quotas[np.argmax(np.where(quotas > 1, quotas - share, -np.inf))] -= 1
    return quotas


class MixtureSampler:
    """Which record of which source the example at each position of this process's stream reads.

    Source: positions come in blocks of BLOCK, each holding every source its quota of times (BLOCK x its
    share of the weights, at least once) in an order shuffled by (seed, process, block). Proportions are
    thus exact per block, and how often a source came before a position has a closed form.
    Record: the k-th visit of a source reads entry k mod n of a permutation of this process's shard of it
    (n records), drawn afresh for each epoch k // n: every epoch visits each record exactly once.
    Sharding: process p of P owns records p, p + P, p + 2P, ... of each source: disjoint, covering all.
    """

    def __init__(self, lengths: list[int], weights: list[float], seed: int, process_index: int = 0,
                 process_count: int = 1):
        weights = np.asarray(weights, np.float64)
        if not lengths or len(weights) != len(lengths):
            raise ValueError(f"need one weight per source, got {len(lengths)} sources and {len(weights)} weights")
        if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise ValueError(f"weights must be positive numbers, got {weights.tolist()}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if seed < 0 or len(lengths) > BLOCK:
            raise ValueError(f"need seed >= 0 and at most {BLOCK} sources")
        self.seed, self.process_index, self.process_count = int(seed), process_index, process_count
        self.shard_lengths = [len(range(process_index, n, process_count)) for n in lengths]
        if min(self.shard_lengths) == 0:
            source = self.shard_lengths.index(0)
            raise DataError(f"source {source} has {lengths[source]} records, fewer than the "
                            f"{process_count} processes that share it")
        self.quotas = _quotas(weights, BLOCK)
        self.probabilities = self.quotas / BLOCK
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}

    def index(self, position: int) -> tuple[int, int]:
        """(source id, record index in that source) of the example at `position` (>= 0) of this process."""
        position = operator.index(position)
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        block, offset = divmod(position, BLOCK)
        sources, ranks = self._block(block)
        source = int(sources[offset])
        return source, self.record_index(source, block * int(self.quotas[source]) + int(ranks[offset]))

    def record_index(self, source: int, visit: int) -> int:
        """The record the `visit`-th (0-based) visit of `source` by this process reads."""
        n = self.shard_lengths[source]
        epoch, k = divmod(visit, n)
        return self.process_index + int(self._permutation(source, epoch)[k]) * self.process_count

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        """The order in which `epoch` visits this process's shard of `source`; the latest one is cached."""
        cached = self._permutations.get(source)
        if cached is None or cached[0] != epoch:
            n = self.shard_lengths[source]
            rng = np.random.default_rng([self.seed, 1, self.process_index, source, epoch])
            cached = self._permutations[source] = epoch, rng.permutation(n).astype(np.min_scalar_type(n))
        return cached[1]

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Source of each position of a block, and how many earlier positions of the block have that source."""
        cached = self._blocks.get(block)
        if cached is None:
            rng = np.random.default_rng([self.seed, 0, self.process_index, block])
            sources = rng.permutation(np.repeat(np.arange(len(self.quotas)), self.quotas))
            ranks = np.empty(BLOCK, np.int64)
            for source, quota in enumerate(self.quotas):
                ranks[sources == source] = np.arange(quota)
            if len(self._blocks) >= 4:  # a small cache: reads are mostly sequential
                self._blocks.clear()
            cached = self._blocks[block] = sources, ranks
        return cached
