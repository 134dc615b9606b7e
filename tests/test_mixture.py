"""Weighted source mixtures: `path[:weight[:shots]]` parsing, proportions, determinism, epochs, host sharding."""

import collections
import pickle

import pytest

from arc_jax.data.bad_records import DataError
from arc_jax.data.mixture import BLOCK, MixtureSampler, SourceSpec, parse_sources


def draws(sampler, count, start=0):
    return [sampler.index(position) for position in range(start, start + count)]


def test_sources_are_drawn_in_proportion_to_their_weights():
    sampler = MixtureSampler([100, 50, 1000], [1, 2, 7], seed=0)
    counts = collections.Counter(source for source, _ in draws(sampler, 20_000))
    for source, share in enumerate([0.1, 0.2, 0.7]):
        assert abs(counts[source] / 20_000 - share) < 0.015
    # Within any window the mix stays close too (each block of positions holds exact quotas).
    window = collections.Counter(source for source, _ in draws(sampler, 1000, start=123_456))
    assert abs(window[2] / 1000 - 0.7) < 0.06


def test_a_tiny_weight_still_gets_drawn():
    sampler = MixtureSampler([10, 10], [1, 1e-9], seed=0)
    assert sampler.quotas.tolist() == [BLOCK - 1, 1]
    assert 1 in {source for source, _ in draws(sampler, BLOCK)}


def test_same_seed_same_sequence_in_any_order_and_after_pickling():
    def make(seed):
        return MixtureSampler([30, 7, 300], [1, 1, 2], seed=seed)

    forward = draws(make(5), 3000)
    sampler = make(5)
    backward = [sampler.index(position) for position in reversed(range(3000))][::-1]
    assert backward == forward  # no hidden iterator state: a position's draw does not depend on call order
    assert draws(pickle.loads(pickle.dumps(sampler)), 3000) == forward
    assert draws(make(6), 3000) != forward
    resumed = make(5)  # resume at position 2000 with nothing but the position
    assert draws(resumed, 1000, start=2000) == forward[2000:]


@pytest.mark.parametrize("length", [1, 7, 100])
def test_each_epoch_visits_every_record_of_a_source_exactly_once(length):
    sampler = MixtureSampler([length, 13], [3, 1], seed=1)
    visits = [record for source, record in draws(sampler, 4 * (length + 13) * 4) if source == 0]
    epochs = [visits[e * length:(e + 1) * length] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(length))
    if length > 5:
        assert epochs[0] != epochs[1]  # a fresh order each epoch


@pytest.mark.parametrize("process_count", [2, 3])
def test_hosts_read_disjoint_shards_that_cover_every_record(process_count):
    lengths = [10, 31]
    seen = [collections.defaultdict(set) for _ in lengths]
    for process in range(process_count):
        sampler = MixtureSampler(lengths, [1, 1], seed=3, process_index=process, process_count=process_count)
        for source, record in draws(sampler, 200):
            seen[source][record].add(process)
    for source, length in enumerate(lengths):
        assert sorted(seen[source]) == list(range(length))  # full coverage
        assert all(len(processes) == 1 for processes in seen[source].values())  # no record on two hosts


def test_sampler_rejects_bad_arguments():
    with pytest.raises(DataError, match="source 1 has 2 records, fewer than the 4 processes"):
        MixtureSampler([10, 2], [1, 1], seed=0, process_index=3, process_count=4)
    with pytest.raises(ValueError, match="one weight per source"):
        MixtureSampler([10, 2], [1], seed=0)
    with pytest.raises(ValueError, match="positive"):
        MixtureSampler([10, 2], [1, 0], seed=0)
    with pytest.raises(ValueError, match="process_index"):
        MixtureSampler([10], [1], seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="position"):
        MixtureSampler([10], [1], seed=0).index(-1)


@pytest.mark.parametrize("spec, expected", [
    ("a.jsonl", [SourceSpec("a.jsonl")]),
    ("a.jsonl:2.5", [SourceSpec("a.jsonl", 2.5)]),
    ("a.jsonl:1:5, b.arrayrecord:3", [SourceSpec("a.jsonl", 1.0, 5), SourceSpec("b.arrayrecord", 3.0)]),
    ("gs://bucket/dir/a.jsonl", [SourceSpec("gs://bucket/dir/a.jsonl")]),
    ("gs://bucket/a.jsonl:0.5:4", [SourceSpec("gs://bucket/a.jsonl", 0.5, 4)]),
    ("data/squad:2:3", [SourceSpec("data/squad", 2.0, 3)]),
    ("odd:name.jsonl:1e-3", [SourceSpec("odd:name.jsonl", 1e-3)]),
])
def test_parse_sources(spec, expected):
    assert parse_sources(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("", "no data sources given"),
    ("  ", "no data sources given"),
    ("a.jsonl,,b.jsonl", "empty entry"),
    ("a.jsonl,", "empty entry"),
    ("a.jsonl:heavy", "bad weight 'heavy'"),
    ("a.jsonl:0", "bad weight '0'"),
    ("a.jsonl:-1", "bad weight '-1'"),
    ("a.jsonl:nan", "bad weight 'nan'"),
    ("a.jsonl:", "bad weight ''"),
    ("a.jsonl:1:2.5", "bad shots '2.5'"),
    ("a.jsonl:1:-2", "bad shots '-2'"),
    ("a.jsonl:1:2:3", "cannot parse data source 'a.jsonl:1:2:3'"),
    (":2", "cannot parse data source ':2'"),
])
def test_parse_sources_errors_are_one_line(spec, message):
    with pytest.raises(DataError, match=message) as error:
        parse_sources(spec)
    assert "\n" not in str(error.value)


def test_large_sources_do_not_repeat_a_record_within_an_epoch():
    sampler = MixtureSampler([100_000, 50_000], [1, 1], seed=0)
    assert len(set(draws(sampler, 50_000))) == 50_000
