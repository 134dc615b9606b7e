"""Static-shape device inputs and the host code that packs them.

Encoder rows hold several texts each (segment ids 1, 2, ...; 0 is padding) with RoPE positions
restarting at 0 per text. Each pooling layer gets a `PoolingStage` that says, for every input
slot, which output slot (group) it belongs to; the device then pools with a segment mean or a
gather, never with a data-dependent shape.

Decoder rows hold the spliced sequence: `compressed_index` is -1 where a text token is read and
otherwise the row of the compressed-vector table to read instead. `splice_segments` cuts a text
at its insertion points and `write_spliced` writes the pieces into a row, for inference
(`pack_decoder_inputs`) and training (data/packing.py) alike; `FirstFit` assigns texts and
samples to rows for both.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from arc_jax.model.attention_rows import AttentionRows
from arc_jax.model.config import EncoderConfig
from arc_jax.model.pooling import pool_groups


class PoolingStage(NamedTuple):
    group_ids: np.ndarray    # [rows, in_len] output slot of each input slot; out_len for padding
    last_index: np.ndarray   # [rows, out_len] input slot of each group's last member
    segment_ids: np.ndarray  # [rows, out_len] text of each output slot (0: padding)
    positions: np.ndarray    # [rows, out_len] 0..m-1 within each text


class EncoderInputs(NamedTuple):
    tokens: np.ndarray       # [rows, len]
    segment_ids: np.ndarray  # [rows, len]
    positions: np.ndarray    # [rows, len]
    stages: tuple[PoolingStage, ...]
    # Memory-token baseline only: [rows, len] index of the memory token in each slot, -1 for text,
    # and [rows, out_len] slots whose final states are the output.
    memory_ids: np.ndarray | None = None
    output_index: np.ndarray | None = None
    # Training with attention rows (arc_jax/model/attention_rows.py): those of the rows, then of
    # each pooling stage's output.
    attention_rows: tuple[AttentionRows, ...] | None = None


class EncoderLayout(NamedTuple):
    """Where each text's output vectors land: output[row, start:start + length]."""

    row: int
    start: int
    length: int


class DecoderInputs(NamedTuple):
    tokens: np.ndarray            # [rows, len] token ids (0 where a compressed vector is read)
    segment_ids: np.ndarray       # [rows, len]
    positions: np.ndarray         # [rows, len]
    compressed_index: np.ndarray  # [rows, len] -1 for text, else row of the compressed table


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _pad_rows(rows: list[list[int]], length: int, fill: int) -> np.ndarray:
    out = np.full((len(rows), length), fill, np.int32)
    for r, values in enumerate(rows):
        out[r, : len(values)] = values
    return out


def pack_encoder_inputs(
    rows: Sequence[Sequence[Sequence[int]]],
    cfg: EncoderConfig,
    row_len: int | None = None,
    stage_lens: Sequence[int] | None = None,
    multiple: int = 8,
    output_len: int | None = None,
) -> tuple[EncoderInputs, list[EncoderLayout]]:
    """Lay out texts (already assigned to rows) as static-shape encoder inputs.

    `row_len`, `stage_lens` and (memory tokens) `output_len` fix the shapes (a training config
    does); left as None they are the smallest multiples of `multiple` that fit. Returns the inputs and, per text in row order, where
    its output vectors are.
    """
    tok_rows, seg_rows, pos_rows, mem_rows, lengths = _lay_out_texts(rows, cfg.n_memory_tokens)
    need = max(len(t) for t in tok_rows)
    row_len = row_len or round_up(need, multiple)
    if need > row_len:
        raise ValueError(f"a row holds {need} tokens but row_len is {row_len}")
    stages, lengths = _pooling_stages(lengths, cfg.pooling_factors, row_len, stage_lens, multiple)
    memory_ids = output_index = None
    if cfg.n_memory_tokens:
        memory_ids, output_index = _memory_outputs(mem_rows, row_len, output_len, multiple)
        lengths = [[cfg.n_memory_tokens] * len(lens) for lens in lengths]
    inputs = EncoderInputs(
        tokens=_pad_rows(tok_rows, row_len, 0),
        segment_ids=_pad_rows(seg_rows, row_len, 0),
        positions=_pad_rows(pos_rows, row_len, 0),
        stages=tuple(stages),
        memory_ids=memory_ids,
        output_index=output_index)
    return inputs, _output_layout(lengths)


def _lay_out_texts(rows: Sequence[Sequence[Sequence[int]]], n_mem: int):
    """Per row: tokens, segment ids, positions and memory-token indices of its texts side by side
    (each text followed by its memory tokens), and each text's length there."""
    tok_rows, seg_rows, pos_rows, mem_rows = [], [], [], []
    lengths = []  # per row, per text: current length (updated through the pooling stages)
    for r, texts in enumerate(rows):
        toks, segs, poss, mems, lens = [], [], [], [], []
        for j, text in enumerate(texts):
            n = len(text)
            if n == 0:
                raise ValueError(f"row {r} text {j} is empty: there is nothing to compress")
            toks += list(text) + [0] * n_mem
            segs += [j + 1] * (n + n_mem)
            poss += list(range(n + n_mem))
            mems += [-1] * n + list(range(n_mem))
            lens.append(n + n_mem)
        tok_rows.append(toks), seg_rows.append(segs), pos_rows.append(poss), mem_rows.append(mems)
        lengths.append(lens)
    return tok_rows, seg_rows, pos_rows, mem_rows, lengths


def _pooling_stages(lengths: list[list[int]], factors: Sequence[int], row_len: int,
                    stage_lens: Sequence[int] | None, multiple: int) -> tuple[list[PoolingStage], list[list[int]]]:
    """One PoolingStage per pooling layer, and each text's length after the last of them."""
    if stage_lens is not None and len(stage_lens) != len(factors):
        raise ValueError(f"{len(stage_lens)} stage lengths for {len(factors)} pooling layers")
    stages = []
    in_len = row_len
    for s, k in enumerate(factors):
        group_rows, last_rows, oseg_rows, opos_rows, new_lengths = _stage_plan(lengths, k)
        need = max(len(o) for o in oseg_rows)
        out_len = stage_lens[s] if stage_lens is not None else round_up(need, multiple)
        if need > out_len:
            raise ValueError(f"pooling layer {s} produces {need} vectors in a row but its length is {out_len}")
        stages.append(PoolingStage(
            group_ids=_pad_rows(group_rows, in_len, out_len),
            last_index=_pad_rows(last_rows, out_len, 0),
            segment_ids=_pad_rows(oseg_rows, out_len, 0),
            positions=_pad_rows(opos_rows, out_len, 0)))
        lengths, in_len = new_lengths, out_len
    return stages, lengths


def _stage_plan(lengths: list[list[int]], k: int):
    """One pooling layer by `k` over rows of texts of `lengths`: per row, the group of each input
    slot, each group's last input slot, each group's text and position; and the pooled lengths."""
    group_rows, last_rows, oseg_rows, opos_rows, new_lengths = [], [], [], [], []
    for lens in lengths:
        groups, last, osegs, oposs, new = [], [], [], [], []
        slot = 0
        for j, n in enumerate(lens):
            sizes = pool_groups(n, k)
            for g, size in enumerate(sizes):
                groups += [len(osegs)] * size
                slot += size
                last.append(slot - 1)
                osegs.append(j + 1)
                oposs.append(g)
            new.append(len(sizes))
        group_rows.append(groups), last_rows.append(last)
        oseg_rows.append(osegs), opos_rows.append(oposs), new_lengths.append(new)
    return group_rows, last_rows, oseg_rows, opos_rows, new_lengths


def _memory_outputs(mem_rows: list[list[int]], row_len: int, output_len: int | None, multiple: int):
    """Memory-token baseline: (memory_ids [rows, row_len], output_index [rows, out_len]), the
    memory token in each slot and the slots whose final states are the output."""
    memory_ids = _pad_rows(mem_rows, row_len, -1)
    out_rows = []
    for mems in mem_rows:
        out_rows.append([i for i, m in enumerate(mems) if m >= 0])
    need = max(len(o) for o in out_rows)
    out_len = output_len or round_up(need, multiple)
    if need > out_len:
        raise ValueError(f"{need} memory-token outputs in a row but output_len is {out_len}")
    return memory_ids, _pad_rows(out_rows, out_len, 0)


def _output_layout(lengths: list[list[int]]) -> list[EncoderLayout]:
    """Per text in row order, where its output vectors are: side by side from the row's start."""
    layout = []
    for r, lens in enumerate(lengths):
        start = 0
        for n in lens:
            layout.append(EncoderLayout(r, start, n))
            start += n
    return layout


class FirstFit:
    """First-fit rows of `capacity` slots: each item goes to the first row with room for it.

    Training packs a batch, so `n_rows` is fixed and `max_items` bounds the texts of an encoder
    row (and with them its pooled length); left as None, a new row opens whenever none has room,
    as inference packs whatever it is given. `items[r]` lists the ids placed in row r in order.
    """

    def __init__(self, capacity: int, n_rows: int | None = None, max_items: int | None = None):
        self.capacity, self.max_items, self.grows = capacity, max_items, n_rows is None
        self.room = [capacity] * (n_rows or 0)
        self.counts = [0] * (n_rows or 0)
        self.items: list[list[int]] = [[] for _ in self.room]

    def fits(self, sizes: Sequence[int], admits=None) -> list[int] | None:
        """Rows for items of `sizes` placed together (a sample's contexts), or None where one of
        them finds no row: then none is placed. `admits(row, size)`, if given, may refuse a row; it is
        asked last, of a row that has room, and the item goes to the first row it admits."""
        room, counts, rows = list(self.room), list(self.counts), []
        for size in sizes:
            row = next((r for r, free in enumerate(room) if size <= free and self._takes(counts[r])
                        and (admits is None or admits(r, size))), None)
            if row is None:
                if not self.grows or size > self.capacity:
                    return None
                row = len(room)
                room.append(self.capacity), counts.append(0)
            room[row] -= size
            counts[row] += 1
            rows.append(row)
        return rows

    def place(self, rows: Sequence[int], sizes: Sequence[int], ids: Sequence[int]) -> None:
        """Put the items `ids` of `sizes` in the `rows` that `fits` gave."""
        for row, size, i in zip(rows, sizes, ids):
            if row == len(self.room):
                self.room.append(self.capacity), self.counts.append(0), self.items.append([])
            self.room[row] -= size
            self.counts[row] += 1
            self.items[row].append(i)

    def _takes(self, count: int) -> bool:
        return self.max_items is None or count < self.max_items


def pack_rows_first_fit(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Assign items (by index) to rows of capacity row_len, longest first, first row that fits."""
    fit = FirstFit(row_len)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        rows = fit.fits([lengths[i]])
        if rows is None:
            raise ValueError(f"item {i} has length {lengths[i]} > row length {row_len}")
        fit.place(rows, [lengths[i]], [i])
    return fit.items


class TableRows(NamedTuple):
    """`count` consecutive rows of the compressed-vector table from `first`: the slots of a
    spliced row that read compressed vectors instead of token embeddings."""

    first: int
    count: int


def splice_segments(text: Sequence[int], blocks: Sequence[np.ndarray | TableRows], offsets: Sequence[int]) -> list:
    """The reference's insertion points -> an ordered list of token pieces and blocks.

    offsets[i] is the number of text tokens between the previous insertion (or the start) and
    block i: [0, 2] means block A, 2 text tokens, block B, then the remaining text. Blocks are
    [k, dim] arrays for the API, or TableRows where the vectors already sit in a table.
    """
    if len(offsets) != len(blocks):
        raise ValueError(f"{len(offsets)} insertion offsets for {len(blocks)} compressed blocks")
    pieces: list = []
    cursor = 0
    for off, block in zip(offsets, blocks):
        if off < 0 or cursor + off > len(text):
            raise ValueError(f"insertion offset {off} at token {cursor} falls outside a text of {len(text)} tokens")
        if off:
            pieces.append(list(text[cursor: cursor + off]))
        pieces.append(block)
        cursor += off
    if cursor < len(text):
        pieces.append(list(text[cursor:]))
    return pieces


def empty_decoder_inputs(rows: int, length: int) -> DecoderInputs:
    """Decoder inputs that are padding everywhere, for `write_spliced` to fill."""
    return DecoderInputs(tokens=np.zeros((rows, length), np.int32), segment_ids=np.zeros((rows, length), np.int32),
                         positions=np.zeros((rows, length), np.int32),
                         compressed_index=np.full((rows, length), -1, np.int32))


def spliced_length(pieces: Sequence[Sequence[int] | TableRows]) -> int:
    return sum(p.count if isinstance(p, TableRows) else len(p) for p in pieces)


def write_spliced(inputs: DecoderInputs, row: int, cursor: int, pieces: Sequence[Sequence[int] | TableRows],
                  segment: int) -> int:
    """Write one sample's spliced sequence into `row` of `inputs` (from `empty_decoder_inputs`)
    from slot `cursor`: token-id pieces as text (compressed_index stays -1), TableRows as table
    indices (token stays 0). Its slots get `segment` and positions 0, 1, ...; returns the slot
    after it."""
    start = cursor
    for piece in pieces:
        if isinstance(piece, TableRows):
            inputs.compressed_index[row, cursor: cursor + piece.count] = np.arange(piece.first, piece.first + piece.count)
            cursor += piece.count
        else:
            inputs.tokens[row, cursor: cursor + len(piece)] = piece
            cursor += len(piece)
    inputs.segment_ids[row, start:cursor] = segment
    inputs.positions[row, start:cursor] = np.arange(cursor - start)
    return cursor


def pack_decoder_inputs(
    samples: Sequence[Sequence[Sequence[int] | np.ndarray]],
    row_len: int | None = None,
    multiple: int = 8,
) -> tuple[DecoderInputs, np.ndarray, np.ndarray]:
    """One sample per row: token-id pieces and compressed blocks [k, dim] in order.

    The caller hands the compressed vectors over as blocks, so they are stacked into one table in
    order and each block's slots index its rows there (training instead indexes the encoder's
    output where the device left it: data/packing.py). Positions run 0..row_len-1 over the whole
    row, padding included, as the cached generation path numbers its prefill.

    Returns the inputs, the stacked table of compressed vectors [n, dim] that `compressed_index`
    points into (None without blocks), and a bool mask [rows, len] of the text-token slots.
    """
    rows, blocks = [], []
    n_vectors = 0
    for sample in samples:
        pieces: list = []
        for piece in sample:
            if isinstance(piece, np.ndarray) and piece.ndim == 2:
                pieces.append(TableRows(n_vectors, len(piece)))
                n_vectors += len(piece)
                blocks.append(piece)
            else:
                pieces.append([int(t) for t in piece])
        rows.append(pieces)
    need = max(spliced_length(pieces) for pieces in rows)
    row_len = row_len or round_up(need, multiple)
    if need > row_len:
        raise ValueError(f"a sample holds {need} positions but row_len is {row_len}")
    inputs = empty_decoder_inputs(len(rows), row_len)
    for r, pieces in enumerate(rows):
        write_spliced(inputs, r, 0, pieces, segment=1)
    inputs.positions[:] = np.arange(row_len)
    text_mask = (inputs.compressed_index < 0) & (inputs.segment_ids > 0)
    table = np.concatenate(blocks) if blocks else None
    return inputs, table, text_mask
