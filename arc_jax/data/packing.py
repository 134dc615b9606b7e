"""Pack training samples into one static-shape batch for the jitted train step.

Encoder side: every context of every sample, first-fit into `encoder_rows` rows of
`encoder_len` tokens (segment ids, per-text positions, host-made pooling plans).
Decoder side: every sample, first-fit into `decoder_rows` rows of `decoder_len` slots; a sample's
slots are its text stream with, at each insertion point, the context's pooled vectors and its
special vector. `compressed_index` points into the table the device builds:

    table = project(concat(encoder_output.reshape(encoder_rows * out_len, dim), [<Rec>, <Cont>]))

so slot k of a context in encoder row r at output offset s reads table[r * out_len + s + k], and
a special vector reads table[encoder_rows * out_len + (0 for <Rec>, 1 for <Cont>)] (`special_rows`).

Rules for what does not fit (each counted in PackStats, never silent):
- a context longer than `encoder_len` (or `encoder_span`) is truncated to it ("context_truncated");
- a sample whose decoder slots exceed `decoder_len` (or `decoder_span`) is dropped ("sample_too_long");
- with a loss buffer (`loss_slots`), a sample with more loss tokens than a row's buffer is dropped
  ("sample_too_many_loss_tokens"), and one whose loss tokens no row's buffer still has room for waits;
- a sample that no longer fits in this batch is returned as leftover for the next batch.

With attention rows (`encoder_attention_rows` / `decoder_attention_rows`: arc_jax/model/attention_rows.py)
each context and each sample also takes the shortest free attention row of its row's group that holds
it: a row whose group has none free is passed over, and a sample that finds none waits as above; the
longest attention row bounds a context (cut) and a sample (dropped) like a span. The batch then carries
each side's `AttentionRows` (the encoder's per pooling stage in `EncoderInputs.attention_rows`, the
decoder's in `TrainBatch.attention_rows`), its rows laid out as without them.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from arc_jax.data.tasks import Sample
from arc_jax.model.config import EncoderConfig
from arc_jax.model.attention_rows import Allocator, AttentionRows, check_spec, layout
from arc_jax.model.param_groups import CONT_TOK, REC_TOK
from arc_jax.model.inputs import (
    EncoderInputs,
    EncoderLayout,
    FirstFit,
    TableRows,
    empty_decoder_inputs,
    pack_encoder_inputs,
    splice_segments,
    write_spliced,
)
from arc_jax.model.pooling import pooled_length, pooled_row_lengths

TASKS = ("reconstruction", "continuation", "fewshot", "long_context")


@dataclasses.dataclass(frozen=True)
class PackingShape:
    encoder_rows: int
    encoder_len: int
    decoder_rows: int
    decoder_len: int
    # Contexts per encoder row; bounds the pooled length of a row, as each text adds at most one
    # partial group per pooling stage.
    max_contexts_per_row: int = 16
    # The longest context (memory tokens included) / sample an encoder / decoder row may hold, in
    # slots; 0 = the row length. Attention then only looks that far (windowed attention, see
    # arc_jax/model/attention.py): a short span saves the scores across the packed texts of a row.
    encoder_span: int = 0
    decoder_span: int = 0
    # Loss-carrying slots a decoder row may hold, 0 = off. On, the packer lists each row's loss slots
    # (TrainBatch.loss_slots, a row's samples kept within it) and the train step runs the final norm
    # and the output head ([dim x vocab], large against small models) on those slots only instead of
    # on every slot of the row; the loss is the same.
    loss_slots: int = 0
    # Attention rows (arc_jax/model/attention_rows.py): [[count, length], ...] of each of the
    # `attention_groups` groups of consecutive rows, [] = off. Each text (a context / a sample) is
    # then attended alone, in the shortest free attention row of its group that holds it; a text
    # longer than the longest is cut (context) or dropped (sample), and one that finds no free row
    # waits for the next batch. The rows of a group stay on one device: `attention_groups` is a
    # multiple of the data x fsdp devices.
    encoder_attention_rows: Sequence = ()
    decoder_attention_rows: Sequence = ()
    attention_groups: int = 1

    def __post_init__(self):
        if self.loss_slots < 0 or self.loss_slots > self.decoder_len:
            raise ValueError(f"data.shape.loss_slots={self.loss_slots}: expected 0 (off) to decoder_len="
                             f"{self.decoder_len}, the loss-carrying slots a decoder row may hold")
        for side in ("encoder", "decoder"):
            field = f"{side}_attention_rows"
            spec = check_spec(getattr(self, field), f"data.shape.{field}")
            object.__setattr__(self, field, spec)
            rows, row_len = getattr(self, f"{side}_rows"), getattr(self, f"{side}_len")
            if spec and (self.attention_groups < 1 or rows % self.attention_groups):
                raise ValueError(f"data.shape.attention_groups={self.attention_groups}: expected a divisor of "
                                 f"{side}_rows={rows}, each group of rows with its own {field}")
            if spec and spec[-1][1] > row_len:
                raise ValueError(f"data.shape.{field}: an attention row of {spec[-1][1]} slots is longer than "
                                 f"{side}_len={row_len}")

    @property
    def has_attention_rows(self) -> bool:
        return bool(self.encoder_attention_rows or self.decoder_attention_rows)

    @property
    def encoder_text_len(self) -> int:
        """The longest encoder text (context and its memory tokens) a row holds."""
        return min(self.encoder_span or self.encoder_len, self.encoder_len, *_longest(self.encoder_attention_rows))

    @property
    def decoder_sample_len(self) -> int:
        """The most decoder slots a sample may take."""
        return min(self.decoder_span or self.decoder_len, self.decoder_len, *_longest(self.decoder_attention_rows))

    @property
    def head_slots(self) -> int:
        """The slots of a decoder row the output head runs on: the loss buffer, or the whole row."""
        return self.loss_slots or self.decoder_len

    def stage_lens(self, cfg: EncoderConfig) -> list[int]:
        return pooled_row_lengths(self.encoder_len, cfg.pooling_factors, self.max_contexts_per_row)


class TrainBatch(NamedTuple):
    encoder: EncoderInputs
    tokens: np.ndarray            # [decoder_rows, decoder_len] text token ids (0 elsewhere)
    segment_ids: np.ndarray       # one id per sample in a row, 0 for padding
    positions: np.ndarray         # 0.. per sample over the spliced sequence
    compressed_index: np.ndarray  # -1 for text slots, else a row of the projected table
    targets: np.ndarray           # next-token targets at text slots
    loss_mask: np.ndarray         # float32, 1 where the target carries loss
    task_ids: np.ndarray          # index into TASKS per slot (-1 for padding), for per-task losses
    # [decoder_rows, shape.loss_slots] int32: the slots of each row whose target carries loss, in
    # order, then -1; None when the shape has no loss buffer (the head runs on every slot).
    loss_slots: np.ndarray | None = None
    # With the shape's decoder_attention_rows: each sample's attention row (arc_jax/model/attention_rows.py).
    attention_rows: AttentionRows | None = None


@dataclasses.dataclass
class PackStats:
    encoder_tokens: int = 0
    encoder_slots: int = 0
    decoder_tokens: int = 0
    decoder_slots: int = 0
    samples: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def encoder_efficiency(self) -> float:
        return self.encoder_tokens / max(1, self.encoder_slots)

    @property
    def decoder_efficiency(self) -> float:
        return self.decoder_tokens / max(1, self.decoder_slots)

    def merge(self, other: PackStats) -> None:
        for f in ("encoder_tokens", "encoder_slots", "decoder_tokens", "decoder_slots", "samples"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.counts.update(other.counts)


def _longest(spec: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """(the longest attention row,) or () without attention rows."""
    return (spec[-1][1],) if spec else ()


def _vectors_per_context(n_tokens: int, cfg: EncoderConfig) -> int:
    return cfg.n_memory_tokens or pooled_length(n_tokens, cfg.pooling_factors)


def _has_special(sample: Sample, cfg: EncoderConfig) -> bool:
    return (sample.special == "rec" and cfg.rec_tok) or (sample.special == "cont" and cfg.cont_tok)


def decoder_slots(sample: Sample, cfg: EncoderConfig, encoder_len: int) -> int:
    extra = cfg.n_memory_tokens
    per_context = [_vectors_per_context(min(len(c), encoder_len - extra), cfg) for c in sample.contexts]
    return len(sample.x) + sum(per_context) + _has_special(sample, cfg) * len(sample.contexts)


def loss_tokens(sample: Sample) -> int:
    """The sample's targets that carry loss: the slots it takes in its row's loss buffer."""
    return sum(sample.loss_mask)


def _decoder_row(fit: FirstFit, loss_room: list[int] | None, need: int, n_loss: int,
                 attention: Allocator | None) -> list[int] | None:
    """[the first decoder row with room for `need` slots and, with a loss buffer, `n_loss` loss
    slots, and with attention rows a free one of >= `need` slots in its group], or None."""
    admits = attention.admits if attention else None
    if loss_room is None:
        return fit.fits([need], admits)
    return next(([r] for r, free in enumerate(fit.room)
                 if need <= free and n_loss <= loss_room[r] and (admits is None or admits(r, need))), None)


def _allocator(spec: tuple[tuple[int, int], ...], rows: int, groups: int) -> Allocator | None:
    return Allocator(spec, groups, rows // groups) if spec else None


def pack_batch(samples: Sequence[Sample], cfg: EncoderConfig, shape: PackingShape
               ) -> tuple[TrainBatch, list[Sample], PackStats]:
    """(batch, leftover samples that did not fit, statistics) for samples taken in order."""
    return pack_batch_placed(samples, cfg, shape)[:3]


@dataclasses.dataclass
class _Placement:
    """Where a batch's samples go (`_place`), before any array is made."""

    enc_fit: FirstFit
    dec_fit: FirstFit
    contexts: list[tuple[int, ...]] = dataclasses.field(default_factory=list)
    placed: list[tuple[Sample, list[int]]] = dataclasses.field(default_factory=list)  # sample, ids of its contexts
    index: list[int] = dataclasses.field(default_factory=list)  # of each placed sample in the input
    leftover: list[Sample] = dataclasses.field(default_factory=list)
    enc_places: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)  # context id -> attention row
    dec_places: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)  # placed sample -> attention row


def _place(samples: Sequence[Sample], cfg: EncoderConfig, shape: PackingShape, stats: PackStats) -> _Placement:
    """First fit of `samples`, in order, into the shape's rows (and attention rows), by the module
    docstring's rules; what is cut, dropped or left over is counted in `stats`."""
    extra = cfg.n_memory_tokens
    out = _Placement(FirstFit(shape.encoder_len, n_rows=shape.encoder_rows, max_items=shape.max_contexts_per_row),
                     FirstFit(shape.decoder_len, n_rows=shape.decoder_rows, max_items=shape.decoder_len))
    loss_room = [shape.loss_slots] * shape.decoder_rows if shape.loss_slots else None
    enc_attention = _allocator(shape.encoder_attention_rows, shape.encoder_rows, shape.attention_groups)
    dec_attention = _allocator(shape.decoder_attention_rows, shape.decoder_rows, shape.attention_groups)
    for index, sample in enumerate(samples):
        ctx = []
        for c in sample.contexts:
            if len(c) + extra > shape.encoder_text_len:
                stats.counts["context_truncated"] += 1
                c = c[: shape.encoder_text_len - extra]
            ctx.append(c)
        need = decoder_slots(sample, cfg, shape.encoder_text_len)
        if need > shape.decoder_sample_len:
            stats.counts["sample_too_long"] += 1
            continue
        n_loss = loss_tokens(sample)
        if shape.loss_slots and n_loss > shape.loss_slots:
            stats.counts["sample_too_many_loss_tokens"] += 1
            continue
        sizes = [len(c) + extra for c in ctx]
        # The contexts claim attention rows together: one that finds none free in a row's group
        # (the earlier contexts' taken) tries the next row.
        enc_rows = out.enc_fit.fits(sizes, enc_attention.trial().claim if enc_attention else None)
        dec_rows = _decoder_row(out.dec_fit, loss_room, need, n_loss, dec_attention)
        if enc_rows is None or dec_rows is None:
            out.leftover.append(sample)
            continue
        ids = list(range(len(out.contexts), len(out.contexts) + len(ctx)))
        out.enc_fit.place(enc_rows, sizes, ids)
        out.dec_fit.place(dec_rows, [need], [len(out.placed)])
        if enc_attention:
            out.enc_places.update((i, enc_attention.take(row, size)) for i, row, size in zip(ids, enc_rows, sizes))
        if dec_attention:
            out.dec_places[len(out.placed)] = dec_attention.take(dec_rows[0], need)
        if loss_room is not None:
            loss_room[dec_rows[0]] -= n_loss
        out.contexts += ctx
        out.placed.append((sample, ids))
        out.index.append(index)
    stats.counts["carried_over"] += len(out.leftover)
    stats.samples = len(out.placed)
    return out


def pack_batch_placed(samples: Sequence[Sample], cfg: EncoderConfig, shape: PackingShape
                      ) -> tuple[TrainBatch, list[Sample], PackStats, list[int]]:
    """pack_batch's (batch, leftover, statistics) and the indices in `samples` of the samples the
    batch holds, in order (what another decoder's pipeline needs to re-make the same batch)."""
    stats = PackStats()
    placement = _place(samples, cfg, shape, stats)
    enc_fit, dec_fit, placed = placement.enc_fit, placement.dec_fit, placement.placed
    rows = [[placement.contexts[i] for i in row] for row in enc_fit.items]
    encoder, places = pack_encoder_inputs(rows, cfg, row_len=shape.encoder_len, stage_lens=shape.stage_lens(cfg),
                                          output_len=cfg.n_memory_tokens * shape.max_contexts_per_row or None)
    where = {i: place for i, place in zip((i for row in enc_fit.items for i in row), places)}
    if shape.encoder_attention_rows:
        encoder = encoder._replace(attention_rows=_encoder_attention_rows(encoder, enc_fit.items, placement.enc_places,
                                                                          cfg, shape))
    out_len = output_len(encoder, shape)
    special_row = special_rows(encoder)

    b, t = shape.decoder_rows, shape.decoder_len
    decoder = empty_decoder_inputs(b, t)
    targets = np.zeros((b, t), np.int32)
    task_ids = np.full((b, t), -1, np.int32)
    loss_mask = np.zeros((b, t), np.float32)
    for row, members in enumerate(dec_fit.items):
        cursor = 0
        for seg, sample_id in enumerate(members, start=1):
            sample, ids = placed[sample_id]
            special = special_row[REC_TOK if sample.special == "rec" else CONT_TOK] if _has_special(sample, cfg) else None
            pieces = _spliced_pieces(sample, [where[i] for i in ids], out_len, special)
            start, cursor = cursor, write_spliced(decoder, row, cursor, pieces, seg)
            text = decoder.compressed_index[row, start:cursor] < 0  # the slots of sample.x, in order
            targets[row, start:cursor][text] = sample.y
            loss_mask[row, start:cursor][text] = sample.loss_mask
            task_ids[row, start:cursor] = TASKS.index(sample.task)
            stats.decoder_tokens += cursor - start
    stats.decoder_slots = b * t
    stats.encoder_tokens = int((encoder.segment_ids > 0).sum())
    stats.encoder_slots = encoder.segment_ids.size
    batch = TrainBatch(encoder, decoder.tokens, decoder.segment_ids, decoder.positions, decoder.compressed_index,
                       targets, loss_mask, task_ids, _loss_slots(loss_mask, shape.loss_slots),
                       _decoder_attention_rows(decoder.segment_ids, dec_fit.items, placement.dec_places, shape))
    return batch, placement.leftover, stats, placement.index


def _decoder_attention_rows(segment_ids: np.ndarray, items: list[list[int]], places: dict[int, tuple[int, int]],
                            shape: PackingShape) -> AttentionRows | None:
    """The decoder's attention rows (None without): placed sample i, segment k + 1 of its row in the
    packer's `items`, in attention row places[i]."""
    if not shape.decoder_attention_rows:
        return None
    spec = shape.decoder_attention_rows
    return layout(segment_ids, _by_segment(items, places), spec, [n for _, n in spec], shape.attention_groups)


def _by_segment(items: list[list[int]], places: dict[int, tuple[int, int]]) -> dict[tuple[int, int], tuple[int, int]]:
    """`places` (text id -> its attention row) keyed by where each text is: (row, segment k + 1), the
    k-th id of row `row` in the packer's `items`."""
    return {(row, k + 1): places[i] for row, ids in enumerate(items) for k, i in enumerate(ids)}


def _encoder_attention_rows(encoder: EncoderInputs, items: list[list[int]], places: dict[int, tuple[int, int]],
                            cfg: EncoderConfig, shape: PackingShape) -> tuple[AttentionRows, ...]:
    """The attention rows of the encoder's rows and of each pooling stage's output: a context
    (segment k + 1 of its row, from the packer's `items`) keeps its attention row through the
    stages, whose rows are the pooled lengths of the rows'."""
    spec = shape.encoder_attention_rows
    segments = _by_segment(items, places)
    out = []
    for s, segment_ids in enumerate([encoder.segment_ids] + [stage.segment_ids for stage in encoder.stages]):
        lengths = [pooled_length(n, cfg.pooling_factors[:s]) for _, n in spec]
        out.append(layout(segment_ids, segments, spec, lengths, shape.attention_groups))
    return tuple(out)


def _loss_slots(loss_mask: np.ndarray, buffer: int) -> np.ndarray | None:
    """Each row's loss-carrying slots in order, -1 after them ([rows, buffer]); None without a buffer.
    The packer kept every row's loss tokens within `buffer`."""
    if not buffer:
        return None
    slots = np.full((loss_mask.shape[0], buffer), -1, np.int32)
    for row, mask in enumerate(loss_mask):
        where = np.flatnonzero(mask > 0)
        slots[row, : len(where)] = where
    return slots


def _spliced_pieces(sample: Sample, places: Sequence[EncoderLayout], out_len: int, special: int | None) -> list:
    """The sample's decoder sequence as pieces for `write_spliced`: its text cut at the insertion
    points, each context's vectors and then its special vector (if any) in between.

    Unlike inference, which stacks the blocks it is given, training reads the encoder output in
    place on the device: a context at output offset s of encoder row r is table rows
    r * out_len + s, .., and the special vectors follow all encoder rows (module docstring).
    """
    blocks, offsets = [], []
    for offset, place in zip(sample.insertions, places):
        blocks.append(TableRows(place.row * out_len + place.start, place.length))
        offsets.append(offset)
        if special is not None:
            blocks.append(TableRows(special, 1))
            offsets.append(0)
    return splice_segments(sample.x, blocks, offsets)


def output_len(encoder: EncoderInputs, shape: PackingShape) -> int:
    if encoder.output_index is not None:
        return encoder.output_index.shape[1]
    if encoder.stages:
        return encoder.stages[-1].segment_ids.shape[1]
    return shape.encoder_len


def special_rows(encoder: EncoderInputs) -> dict[str, int]:
    """The rows of <Rec> and <Cont> in the table of a batch whose encoder inputs are `encoder`:
    encoder_rows * out_len and one more (module docstring). From the shapes alone, so it holds for
    arrays and ShapeDtypeStructs, a leading micro-batch axis, and a global batch (whose special
    rows follow all its rows: arc_jax.data.pipeline.global_compressed_index)."""
    if encoder.output_index is not None:
        out_len = encoder.output_index.shape[-1]
    elif encoder.stages:
        out_len = encoder.stages[-1].segment_ids.shape[-1]
    else:
        out_len = encoder.tokens.shape[-1]
    base = encoder.tokens.shape[-2] * out_len
    return {REC_TOK: base, CONT_TOK: base + 1}
