"""Attention rows: each packed text attended alone, in a short row of its own, for training.

A training batch packs several texts into each row (arc_jax/data/packing.py), which keeps the
weight matmuls full; but attention over a packed row scores every text against the others' keys
too (masked, still computed), and the windows of attention.py cannot do better than about half of
that. With attention rows the matmuls stay on the packed rows while each layer's attention runs on
another layout of the same slots: the rows are split into `groups` of consecutive rows, and each
group has its own set of attention rows of a few static lengths (`counts[i]` rows of `lengths[i]`
slots, the shape's `*_attention_rows`). The packer gives each text the shortest free attention row
of its group that holds it, from slot 0, so that an attention row holds one text and padding: its
scores are the text's own (the padding keys masked), at positions 0, 1, ... as in the packed row.

The device gathers q, k and v into the attention rows (one gather each, in the group), attends
them with the usual paths of `dot_product_attention` (dense, block-causal, or cuDNN by lengths),
and gathers the outputs back to the packed slots; packed padding, and an attention row's slots after
its text, read zeros. Everything is a static shape: which slot goes where is host-made
(`AttentionRows`, built by `layout`), and the gathers' gradients are scatter-adds of the same
indices, each slot written once (`_take`). Groups keep the gathers within the rows
that one device holds: the batch's rows are split over the data devices in blocks, and `groups`
is a multiple of their count (each device gathers within its own groups).

A pooling layer's queries are the pooled slots of the same texts: its query attention rows are the
pooled lengths of the key rows (`pooled_length` of each length), the same counts and places.
"""

from __future__ import annotations

import copy
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class AttentionRows(NamedTuple):
    """Where each packed slot is attended, for one layout of a batch's rows (host-made by `layout`).

    rows[i]: [groups, counts[i], lengths[i]] the packed slot each slot of attention row j of length
        lengths[i] reads, numbered within its group's rows laid end to end (slot s of the group's
        row r is r * row_len + s); -1 after the row's text.
    inverse: [groups, group_rows * row_len] the attention slot of each packed slot, numbered over
        the group's attention rows laid end to end (rows[0]'s, then rows[1]'s, ...); padding slots
        point past them all, and read zeros.
    """

    rows: tuple[np.ndarray | jax.Array, ...]
    inverse: np.ndarray | jax.Array


def _take(flat, index):
    """flat [groups, n, ...] read at index [groups, m] within each group -> [groups, m, ...]; an index
    outside 0..n-1 (-1, or past the end) reads zeros.

    Every such index is first made a distinct one past the end, so that all of them are distinct: the
    gather is marked so, and its backward pass, a scatter-add of the same indices, writes each slot
    once (without atomic adds on a GPU) and drops what the outside indices carry. That is the
    attention rows' padding: its slots are the kernel's to fill (cuDNN masked by lengths promises
    nothing about them, outputs or gradients), and nothing of them may reach a text's slot."""
    n, m = flat.shape[1], index.shape[1]
    index = jnp.where((index >= 0) & (index < n), index, n + jnp.arange(m, dtype=index.dtype))
    dims = jax.lax.GatherDimensionNumbers(offset_dims=tuple(range(2, flat.ndim)), collapsed_slice_dims=(1,),
                                          start_index_map=(1,), operand_batching_dims=(0,),
                                          start_indices_batching_dims=(0,))
    return jax.lax.gather(flat, index[..., None], dims, slice_sizes=(1, 1, *flat.shape[2:]), unique_indices=True,
                          mode=jax.lax.GatherScatterMode.FILL_OR_DROP, fill_value=0)


def _gather(x, index):
    """x [batch, len, ...] -> [groups * count, length, ...]: the packed slots `index`
    [groups, count, length] names, within each group of rows (zeros where it is -1)."""
    groups, count, length = index.shape
    flat = _take(x.reshape(groups, -1, *x.shape[2:]), index.reshape(groups, count * length))
    return flat.reshape(groups * count, length, *x.shape[2:])


def attend_in_rows(attend, q, k, v, q_rows: AttentionRows, kv_rows: AttentionRows):
    """Attention of q [batch, t, heads, d] on k, v [batch, s, kv_heads, d] in attention rows:
    `attend(q, k, v, q_valid, kv_valid)` attends one set of rows ([rows, length, ...], each holding
    one text from slot 0; `*_valid` [rows, length] int32, 1 on the text's slots) and its outputs
    come back to q's packed slots ([batch, t, heads, d], zero at padding)."""
    b, t, h, d = q.shape
    groups = q_rows.inverse.shape[0]
    outs = []
    for q_index, kv_index in zip(q_rows.rows, kv_rows.rows, strict=True):
        q_valid = (q_index >= 0).reshape(-1, q_index.shape[-1]).astype(jnp.int32)
        kv_valid = (kv_index >= 0).reshape(-1, kv_index.shape[-1]).astype(jnp.int32)
        out = attend(_gather(q, q_index), _gather(k, kv_index), _gather(v, kv_index), q_valid, kv_valid)
        outs.append(out.reshape(groups, -1, h, d))
    return _take(jnp.concatenate(outs, axis=1), q_rows.inverse).reshape(b, t, h, d)


def check_spec(spec: Sequence[Sequence[int]], name: str) -> tuple[tuple[int, int], ...]:
    """`spec` ([[count, length], ...]) as sorted (count, length) pairs, or ValueError naming `name`."""
    pairs = []
    for entry in spec:
        if len(entry) != 2 or any(not isinstance(x, (int, np.integer)) or x <= 0 for x in entry):
            raise ValueError(f"{name}: expected [[count, length], ...] of positive integers, got {list(map(list, spec))}")
        pairs.append((int(entry[0]), int(entry[1])))
    lengths = [length for _, length in pairs]
    if len(set(lengths)) != len(lengths):
        raise ValueError(f"{name}: each length once, got {lengths}")
    return tuple(sorted(pairs, key=lambda p: p[1]))


class Allocator:
    """The free attention rows of each group: a text takes the shortest free one that holds it."""

    def __init__(self, spec: tuple[tuple[int, int], ...], groups: int, group_rows: int):
        self.lengths = [length for _, length in spec]
        self.counts = [count for count, _ in spec]
        self.free = [list(self.counts) for _ in range(groups)]
        self.group_rows = group_rows

    def group(self, row: int) -> int:
        return row // self.group_rows

    def _choice(self, free: list[int], size: int) -> int | None:
        return next((i for i, length in enumerate(self.lengths) if size <= length and free[i]), None)

    def admits(self, row: int, size: int) -> bool:
        """Whether the group of packed `row` has a free attention row of at least `size` slots."""
        return self._choice(self.free[self.group(row)], size) is not None

    def trial(self) -> "Allocator":
        """A copy to try a sample's texts on together (`claim`), this one untouched."""
        trial = copy.copy(self)
        trial.free = [list(f) for f in self.free]
        return trial

    def claim(self, row: int, size: int) -> bool:
        """Take the row `take` would for a text of `size` slots in packed `row`, if there is one."""
        return self._take(row, size) is not None

    def take(self, row: int, size: int) -> tuple[int, int]:
        """(length index, attention row index) taken by a text of `size` slots in packed `row`: the
        shortest free length's first free row."""
        taken = self._take(row, size)
        if taken is None:
            raise ValueError(f"no free attention row of >= {size} slots in the group of row {row}")
        return taken

    def _take(self, row: int, size: int) -> tuple[int, int] | None:
        free = self.free[self.group(row)]
        i = self._choice(free, size)
        if i is None:
            return None
        free[i] -= 1
        return i, self.counts[i] - free[i] - 1


def layout(segment_ids: np.ndarray, places: dict[tuple[int, int], tuple[int, int]],
           spec: tuple[tuple[int, int], ...], lengths: Sequence[int], groups: int) -> AttentionRows:
    """The AttentionRows of packed rows `segment_ids` [rows, len] whose text (row, segment id) sits
    in attention row `places[(row, segment)]` = (length index, row index) (`Allocator.take`), the
    attention rows `lengths[i]` slots long (those of `spec`, or their pooled lengths)."""
    n_rows, row_len = segment_ids.shape
    group_rows = n_rows // groups
    rows = [np.full((groups, count, length), -1, np.int32) for (count, _), length in zip(spec, lengths)]
    offsets = np.cumsum([0] + [count * length for (count, _), length in zip(spec, lengths)])
    inverse = np.full((groups, group_rows * row_len), offsets[-1], np.int32)
    for (row, segment), (i, j) in places.items():
        slots = np.flatnonzero(segment_ids[row] == segment)
        if len(slots) > lengths[i]:
            raise ValueError(f"a text of {len(slots)} slots in an attention row of {lengths[i]}")
        g, packed = row // group_rows, (row % group_rows) * row_len + slots
        rows[i][g, j, : len(slots)] = packed
        inverse[g, packed] = offsets[i] + j * lengths[i] + np.arange(len(slots))
    return AttentionRows(tuple(rows), inverse)
