"""`arc-jax data check`: run a config's input pipeline for some batches and report what it made,
so data can be validated before accelerator hours are spent on it.

With the first decoder's shape in the config (model.decoders[0].backbone), it also reports the
batches' useful FLOPs over the FLOPs the train step executes at the static shape (arc_jax/train/
flops.py: padding and attention across packed texts are the difference; with "splash" attention,
less the blocks its kernel skips on these batches), the longest context
and sample seen, and proposes a shape fitted to the data: spans at the longest texts (windowed
attention) and encoder rows (today's length, its halves, or a few average contexts long) as many as
the decoder rows' contexts need, then shorter decoder rows and a loss buffer (the output head on the
loss-carrying slots only) sized from the rows' loss tokens, then attention rows on each side (each
text attended alone: arc_jax/model/attention_rows.py) and, with them, fewer and longer rows, each
measured on the same batches. Row counts proposed stay multiples of `devices`, the data x fsdp devices
the rows will be split over, and attention rows come in a group of rows a device."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import numpy as np

from tqdm import tqdm

from arc_jax.config_loading import to_plain
from arc_jax.data.config import parse_data_config
from arc_jax.data.packing import PackingShape
from arc_jax.data.pipeline import build_batches
from arc_jax.model.config import BackboneConfig, EncoderConfig

# Encoder fill the proposal aims at: first fit leaves a little in each row.
_TARGET_FILL = 0.95
_MAX_CANDIDATES = 24  # encoder shapes tried, each by packing the batches again
# A change of shape is proposed for at least this much more of the executed work useful: a shape
# within noise of today's is no reason to change a recipe's batches.
_MIN_GAIN = 0.005


_EVENTS = {
    "carried_over": "carried over to the next batch",
    "context_truncated": "contexts truncated to encoder_len",
    "sample_too_long": "samples dropped: longer than decoder_len",
    "does_not_fit_a_batch": "samples dropped: they fit no empty batch",
    "sample_too_many_loss_tokens": "samples dropped: more loss tokens than loss_slots",
}

# Attention rows tried: up to this many lengths, as many of each as the groups of rows needed in
# these quantiles of the batches (a text that finds no free row waits for the next batch), the few
# of fewest executed FLOPs at each quantile packed again and measured.
_MAX_ATTENTION_LENGTHS = 16
_ATTENTION_QUANTILES = (0.8, 0.9, 0.95, 1.0)
_ATTENTION_CANDIDATES = 3

# Loss buffers tried: the most loss tokens a row held, and the quantiles of the rows' loss tokens,
# rounded up to a multiple of 8 (a rarely full row then waits, its samples carried over).
_LOSS_QUANTILES = (1.0, 0.99, 0.95, 0.9)


def data_check(config, n_batches: int = 20, devices: int = 1) -> dict:
    """Iterate `n_batches` batches; print and return counts, packing efficiency and throughput.

    Reads what the input pipeline reads, checked: config.data, the encoder, the seed and the first
    decoder's tokenizer. The mesh is not resolved (a check may run on a machine other than the
    run's): `devices` says over how many devices (data x fsdp) the run splits the rows, and the row
    counts proposed are multiples of it."""
    if devices < 1:
        raise ValueError(f"devices={devices}: the rows are split over at least one device")
    data = parse_data_config(config.data)
    encoder = EncoderConfig.from_dict(to_plain(config.model.encoder))
    backbone = config.model.decoders[0].get("backbone")
    decoder = BackboneConfig.from_dict(to_plain(backbone)) if backbone else None
    batches = build_batches(data, encoder, config.seed, config.model.decoders[0].tokenizer)
    start = time.perf_counter()
    work = _Work(encoder, decoder, data.shape, config.get("attention_impl", "xla"), devices)
    for _ in tqdm(range(n_batches), desc="data check", unit="batch"):
        work.add(next(batches)[0])
    seconds = time.perf_counter() - start
    total, bad = batches.total, batches.bad
    report = {
        "batches": n_batches,
        "samples": total.samples,
        "samples_per_source": dict(batches.source_counts),
        "encoder_tokens": total.encoder_tokens,
        "decoder_tokens": total.decoder_tokens,
        "encoder_efficiency": total.encoder_efficiency,
        "decoder_efficiency": total.decoder_efficiency,
        "packing_events": dict(total.counts),
        "bad_records": dict(bad.counts),
        "seconds": seconds,
        "decoder_tokens_per_second": total.decoder_tokens / seconds,
    }
    print(f"\n{n_batches} batches, {total.samples} samples in {seconds:.1f}s "
          f"({report['decoder_tokens_per_second']:,.0f} decoder tokens/s, "
          f"{data.worker_count} worker process(es))")
    for path, n in sorted(batches.source_counts.items()):
        print(f"  {n:8d} samples drawn from {path}")
    print(f"  encoder: {total.encoder_tokens:,} tokens, packing efficiency {total.encoder_efficiency:.1%}")
    print(f"  decoder: {total.decoder_tokens:,} slots used, packing efficiency {total.decoder_efficiency:.1%}")
    for event, n in sorted(total.counts.items()):
        print(f"  {n:8d} x {_EVENTS.get(event, event)}")
    print(bad.summary())
    for field in ("encoder_rows", "decoder_rows"):
        if getattr(data.shape, field) % devices:
            print(f"  config.data.shape.{field}={getattr(data.shape, field)} is not a multiple of the {devices} "
                  "devices the rows are split over: the run would refuse it")
    report.update(work.report())
    if decoder is not None:
        remake = lambda shape: build_batches(dataclasses.replace(data, shape=shape), encoder, config.seed,
                                             config.model.decoders[0].tokenizer)
        proposed, measured = _propose(work, remake, n_batches, devices)
        report["proposed_shape"] = dataclasses.asdict(proposed)
        if measured is not None:
            report["proposed"] = measured
        _print_work(report, data.shape, proposed)
    return report


class _Work:
    """Useful and executed FLOPs, fills and longest texts of the batches of one shape."""

    def __init__(self, encoder: EncoderConfig, decoder: BackboneConfig | None, shape: PackingShape,
                 attention_impl: str = "xla", devices: int = 1):
        from arc_jax.train import flops

        self.flops, self.encoder, self.decoder, self.shape = flops, encoder, decoder, shape
        self.attention_impl = attention_impl
        self.executed = (flops.train_step_flops(encoder, decoder, shape, attention_impl=attention_impl)["total"]
                         if decoder else 0.0)
        self.useful, self.skipped, self.batches = 0.0, 0.0, 0  # skipped: by the splash kernel
        self.counts: dict[str, int] = {}
        self.encoder_tokens: list[int] = []
        self.longest_context = self.longest_sample = 0
        self.contexts = 0
        self.row_loss_tokens: list[int] = []  # loss tokens of each decoder row
        self.samples = 0
        self.most_sample_loss = 0  # loss tokens of the sample with the most
        # Per batch and group of rows (`attention_groups`, or `devices` rows' groups): the lengths of
        # its contexts and of its samples, for the attention rows proposed.
        self.groups = shape.attention_groups if shape.has_attention_rows else devices
        if shape.encoder_rows % self.groups or shape.decoder_rows % self.groups:
            self.groups = 1
        self.group_contexts: list[list[int]] = []
        self.group_samples: list[list[int]] = []

    def group_lengths(self, side: str) -> list[list[int]]:
        """Per batch and group of rows, the slots of its contexts ("encoder") or samples ("decoder")."""
        return self.group_contexts if side == "encoder" else self.group_samples

    def add(self, batch) -> None:
        self.batches += 1
        if self.decoder is not None:
            self.useful += self.flops.useful_train_flops(self.encoder, self.decoder, batch)["total"]
            self.skipped += self.flops.skipped_attention_flops(self.encoder, self.decoder, batch,
                                                               attention_impl=self.attention_impl)
        counts = self.flops.batch_counts(batch)
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.encoder_tokens.append(counts["encoder_tokens"])
        enc = _text_lengths(batch.encoder.segment_ids)
        self.contexts += len(enc)
        self.longest_context = max(self.longest_context, max(enc, default=0))
        samples = _text_lengths(batch.segment_ids)
        self.samples += len(samples)
        self.group_contexts += _group_text_lengths(batch.encoder.segment_ids, self.groups)
        self.group_samples += _group_text_lengths(batch.segment_ids, self.groups)
        self.longest_sample = max(self.longest_sample, max(samples, default=0))
        loss = (np.asarray(batch.loss_mask) > 0).reshape(-1, np.shape(batch.loss_mask)[-1])
        self.row_loss_tokens += loss.sum(-1).tolist()
        seg = np.asarray(batch.segment_ids).reshape(loss.shape)
        self.most_sample_loss = max([self.most_sample_loss] + [int(np.bincount(s, weights=m).max())
                                                               for s, m in zip(seg, loss)])

    def report(self) -> dict:
        c = self.counts
        rows = max(1, len(self.row_loss_tokens))
        out = {"encoder_fill": c["encoder_tokens"] / c["encoder_slots"],
               "decoder_fill": c["decoder_tokens"] / c["decoder_slots"],
               "longest_context": self.longest_context, "longest_sample": self.longest_sample,
               "samples_per_batch": self.samples / max(1, self.batches),
               "most_loss_tokens_per_row": max(self.row_loss_tokens, default=0),
               # loss tokens over the slots the output head runs on (the loss buffer, or every slot)
               "head_fill": c["loss_tokens"] / (rows * self.shape.head_slots)}
        if self.decoder is not None:
            executed = self.executed - self.skipped / self.batches
            out.update(useful_flops_per_batch=self.useful / self.batches, executed_flops_per_batch=executed,
                       useful_fraction=self.useful / (self.batches * executed))
        return out


def _variant(shape: PackingShape, **changes) -> PackingShape | None:
    """`shape` with `changes`, or None where they make no shape (PackingShape refuses it: an attention
    row longer than its row, rows its attention groups do not divide)."""
    try:
        return dataclasses.replace(shape, **changes)
    except ValueError:
        return None


def _mean_context(work: _Work) -> float:
    """Encoder tokens of the average context of the batches."""
    return sum(work.encoder_tokens) / max(1, work.contexts)


def _encoder_lengths(work: _Work) -> list[int]:
    """Encoder row lengths to try, longest first, each holding the longest context seen: today's,
    its halves, and rows of k average contexts at `_TARGET_FILL` (k = 1, 2, ...; multiples of 8 slots),
    which halving steps over: for documents of ~80 tokens in rows of 256, 168 (two a row) besides 128
    (one)."""
    s, longest, mean_context = work.shape, max(1, work.longest_context), _mean_context(work)
    lengths, length = {s.encoder_len}, s.encoder_len // 2
    while length >= longest:
        lengths.add(length)
        length //= 2
    for k in itertools.count(1):
        length = 8 * math.ceil(k * mean_context / _TARGET_FILL / 8)
        if length >= s.encoder_len:
            break
        if length >= longest:
            lengths.add(length)
    return sorted(lengths, reverse=True)


def _candidates(work: _Work, devices: int = 1) -> list[PackingShape]:
    """Shapes with spans at the longest texts seen and encoder rows of `_encoder_lengths`, from as
    many as the batches' encoder tokens fill to as many as full decoder rows would need (their
    contexts scaled up by the decoder's empty share: an encoder too small for the decoder leaves
    decoder slots empty), in multiples of `devices`."""
    s, mean_context = work.shape, _mean_context(work)
    decoder_fill = max(work.report()["decoder_fill"], 1e-3)
    out = []
    for length in _encoder_lengths(work):
        low = devices * math.ceil(np.mean(work.encoder_tokens) / length / devices)
        high = math.ceil(max(work.encoder_tokens) / decoder_fill / length) + 1
        for rows in range(low, max(low, high) + 1, devices):
            out.append(_variant(
                s, encoder_rows=rows, encoder_len=length, encoder_span=work.longest_context,
                decoder_span=_decoder_span(work, s.decoder_len),
                max_contexts_per_row=min(length, max(2, math.ceil(length / mean_context) + 1))))
    return [c for c in out if c][:_MAX_CANDIDATES]


def _decoder_candidates(work: _Work, shape: PackingShape, devices: int = 1) -> list[PackingShape]:
    """`shape` with shorter decoder rows: k of the longest sample (rounded up to 4 slots) a row, as
    many rows (a multiple of the current count's factor of 8 and of `devices`) as hold about today's slots; shorter
    rows fit the samples more tightly and attend fewer keys. A loss buffer shrinks with the row (its
    share of the row kept, in multiples of 8), never below the most loss tokens a sample had."""
    longest = max(1, work.longest_sample)
    slots = shape.decoder_rows * shape.decoder_len
    # Rows stay divisible by the devices they are split over, and by today's rows' factor of 8.
    unit = math.lcm(math.gcd(shape.decoder_rows, 8), devices)
    out = []
    for k in range(1, shape.decoder_len // longest + 1):
        length = 4 * math.ceil(k * longest / 4)
        for rows in {unit * math.floor(slots / length / unit), unit * math.ceil(slots / length / unit)}:
            if length < shape.decoder_len and rows and 0.6 * slots <= rows * length <= 1.15 * slots:
                out.append(_variant(shape, decoder_rows=rows, decoder_len=length,
                                    decoder_span=_decoder_span(work, length),
                                    loss_slots=_row_loss_slots(work, shape, length)))
    return [c for c in out if c]


def _row_loss_slots(work: _Work, shape: PackingShape, decoder_len: int) -> int:
    """`shape`'s loss buffer (0: none) for rows of `decoder_len` slots: its share of the row."""
    if not shape.loss_slots:
        return 0
    return _loss_buffer(work, decoder_len, shape.loss_slots * decoder_len / shape.decoder_len)


def _loss_buffer(work: _Work, decoder_len: int, tokens: float) -> int:
    """A loss buffer of at least `tokens` slots in a multiple of 8, never smaller than the most loss
    tokens a sample had, at most the row."""
    return min(decoder_len, max(8, work.most_sample_loss, 8 * math.ceil(tokens / 8)))


def _decoder_span(work: _Work, decoder_len: int) -> int:
    """The longest sample seen as the decoder span of rows of `decoder_len` slots where its windows
    read fewer keys per query than the row without one (block-causal where it can be cut), else 0:
    the "xla" path attends a span's windows whenever they read fewer keys than the dense row."""
    from arc_jax.model.attention import keys_per_query

    longest = min(max(1, work.longest_sample), decoder_len)
    windowed = keys_per_query(decoder_len, longest, causal=True) < keys_per_query(decoder_len, 0, causal=True)
    return longest if windowed else 0


def _propose(work: _Work, remake, n_batches: int, devices: int = 1) -> tuple[PackingShape, dict | None]:
    """The candidate shape doing the most useful work per executed FLOP on the same data, measured by
    packing the batches again; the current shape when none does `_MIN_GAIN` better. Candidates in turn: encoder
    rows and spans (`_candidates`, whose decoder rows must stay as full, within a point), shorter
    decoder rows (`_decoder_candidates`, whose batches must hold as many samples, -1% to +10%: the
    batch size is the recipe's), a loss buffer (`_loss_buffers`), each stage from the best of the one
    before. Row counts stay multiples of `devices`."""
    current = work.report()
    best, best_report, best_work = work.shape, None, work
    best_fraction, decoder_fill = current["useful_fraction"], current["decoder_fill"]

    def measure(shapes, desc, same_samples=False):
        nonlocal best, best_report, best_fraction, best_work
        for shape in tqdm(shapes, desc=desc, unit="shape"):
            check, batches = _Work(work.encoder, work.decoder, shape, work.attention_impl, devices), remake(shape)
            for _ in range(n_batches):
                check.add(next(batches)[0])
            r = check.report()
            samples = r["samples_per_batch"] / current["samples_per_batch"]
            # Shorter decoder rows must hold as many samples; other shapes must keep the decoder rows
            # as full (an encoder too small for the decoder starves it).
            kept = 0.99 <= samples <= 1.1 if same_samples else r["decoder_fill"] >= decoder_fill - 0.01
            if r["useful_fraction"] >= best_fraction + _MIN_GAIN and kept:
                best, best_report, best_fraction, best_work = shape, r, r["useful_fraction"], check

    measure(_candidates(work, devices), "shapes tried")
    measure(_decoder_candidates(work, best, devices), "decoder rows tried", same_samples=True)
    measure([dataclasses.replace(best, loss_slots=n) for n in _loss_buffers(best_work)], "loss buffers tried")
    for side in ("encoder", "decoder"):
        measure(_attention_row_candidates(best_work, best, side, devices), f"{side} attention rows tried",
                same_samples=True)
    for side in ("encoder", "decoder"):
        measure(_long_row_candidates(best_work, best, side, devices), f"longer {side} rows tried", same_samples=True)
    return best, best_report


def _long_row_candidates(work: _Work, shape: PackingShape, side: str, devices: int) -> list[PackingShape]:
    """With attention rows on `side`, its row length no longer bounds attention: `shape` with fewer,
    longer rows there (k rows a group of attention rows, k = 1, 2), which first-fit fills more fully,
    holding today's slots or `_ATTENTION_QUANTILES` of the slots the batches' texts took (in
    multiples of 8); an encoder row's contexts and a decoder row's loss buffer in proportion."""
    if not getattr(shape, f"{side}_attention_rows"):
        return []
    n_rows, row_len = getattr(shape, f"{side}_rows"), getattr(shape, f"{side}_len")
    lengths = work.group_lengths(side)
    # A batch's slots a group: first fit fills the first groups' rows before the next's.
    per_batch = np.array([sum(t) for t in lengths]).reshape(-1, work.groups).mean(1)
    totals = {n_rows * row_len / work.groups} | {float(np.quantile(per_batch, q)) for q in _ATTENTION_QUANTILES}
    out = []
    for k in (1, 2):
        rows = k * work.groups
        if rows >= n_rows or rows % devices:
            continue
        for total in sorted(totals):
            length = 8 * math.ceil(total / k / 8)
            if side == "encoder":
                # A group's texts each take one of its attention rows.
                contexts = min(math.ceil(shape.max_contexts_per_row * n_rows * length / (rows * row_len)),
                               sum(count for count, _ in shape.encoder_attention_rows))
                out.append(_variant(shape, encoder_rows=rows, encoder_len=length, max_contexts_per_row=contexts))
            else:
                loss = min(length, 8 * math.ceil(shape.loss_slots * length / row_len / 8)) if shape.loss_slots else 0
                out.append(_variant(shape, decoder_rows=rows, decoder_len=length, loss_slots=loss))
    return [c for c in out if c]


def _attention_row_candidates(work: _Work, shape: PackingShape, side: str, devices: int) -> list[PackingShape]:
    """`shape` with attention rows (`_attention_row_specs`) on `side` ("encoder" or "decoder"), in
    groups of the rows that `devices` devices hold each (or the shape's own groups): for each of
    `_ATTENTION_QUANTILES`, the `_ATTENTION_CANDIDATES` specs of fewest executed FLOPs (counted, not
    packed: packing is what costs), fewest lengths first (more lengths must then buy `_MIN_GAIN`)."""
    groups = work.groups  # the groups the texts' lengths were gathered in
    if groups % devices:
        return []
    lengths = work.group_lengths(side)
    limit = shape.encoder_len if side == "encoder" else shape.decoder_len
    current = getattr(shape, f"{side}_attention_rows")

    def executed(candidate: PackingShape) -> float:
        return work.flops.train_step_flops(work.encoder, work.decoder, candidate,
                                           attention_impl=work.attention_impl)["total"]

    chosen = []
    for quantile in _ATTENTION_QUANTILES:
        shapes = [dataclasses.replace(shape, attention_groups=groups, **{f"{side}_attention_rows": spec})
                  for spec in _attention_row_specs(lengths, limit, quantile) if spec != current]
        chosen += sorted(shapes, key=executed)[:_ATTENTION_CANDIDATES]
    unique = list(dict.fromkeys(chosen))
    return sorted(unique, key=lambda s: len(getattr(s, f"{side}_attention_rows")))


def _loss_buffers(work: _Work) -> list[int]:
    """Loss buffer sizes to try (`_LOSS_QUANTILES` of the rows' loss tokens) smaller than the
    slots the output head runs on now, and never smaller than the most loss tokens a sample had
    (a buffer that drops whole kinds of samples, such as every document's last window, would bias
    what is trained on)."""
    if not work.row_loss_tokens:
        return []
    sizes = {_loss_buffer(work, work.shape.decoder_len, np.quantile(work.row_loss_tokens, q)) for q in _LOSS_QUANTILES}
    return sorted((n for n in sizes if n < work.shape.head_slots), reverse=True)


def _group_text_lengths(segment_ids, groups: int) -> list[list[int]]:
    """Per group of consecutive rows (`groups` of them, of each micro-batch), its texts' slots."""
    seg = np.asarray(segment_ids).reshape(-1, np.shape(segment_ids)[-1])
    return [_text_lengths(part) for part in np.split(seg, groups * (seg.shape[0] // np.shape(segment_ids)[-2]))]


def _attention_row_specs(group_lengths: list[list[int]], limit: int, quantile: float = 1.0
                         ) -> list[tuple[tuple[int, int], ...]]:
    """Attention rows to try for texts whose lengths per group of rows (and batch) are
    `group_lengths`: for k = 1 .. `_MAX_ATTENTION_LENGTHS` lengths, the rows with the fewest (query,
    key) pairs (count x length², summed) that hold the texts of the `quantile` of the groups. A row of
    length c is needed for each text longer than the next shorter length (a text takes a longer row
    when the shorter ones are taken): with lengths c_1 < ... < c_k, c_k the longest text's, there are
    need(c_{i-1}) - need(c_i) rows of c_i, need(c) being the quantile of the groups' counts of texts
    longer than c (c_0 = 0, where it is the largest count: a group with more texts than rows would
    keep its short ones waiting, and the shortest rows cost least; at least one row of c_k). The
    lengths are the texts' own in multiples of 8 slots, at most `limit`; a dynamic programme over
    them finds the cheapest k exactly (cuts at quantiles of the lengths, as before, left a long
    tail's texts in rows of the longest length: up to 5x the packed rows' pairs on the paper's
    fine-tuning data)."""
    per_group = [np.sort(texts) for texts in group_lengths]
    if not sum(map(len, per_group)):
        return []
    lengths = np.concatenate(per_group)
    cuts = np.concatenate([[0], np.unique(np.minimum(limit, 8 * np.ceil(lengths / 8)).astype(int))])
    longer = np.array([len(t) - np.searchsorted(t, cuts, side="right") for t in per_group])  # [group, cut]
    need = np.ceil(np.quantile(longer, quantile, axis=0)).astype(int)
    need[0] = longer[:, 0].max()  # rows for every group's count of texts: the shortest cost least
    need[:-1] = np.maximum(need[:-1], 1)  # the longest text needs its row in any group it lands in
    need[-1] = 0
    pairs = cuts.astype(float) ** 2
    # best[m, j]: the fewest pairs of m lengths, the longest cuts[j], holding the texts up to it;
    # before[m, j]: the length before it.
    best = np.full((_MAX_ATTENTION_LENGTHS + 1, len(cuts)), np.inf)
    best[0, 0] = 0
    before = np.zeros(best.shape, dtype=int)
    for m in range(1, _MAX_ATTENTION_LENGTHS + 1):
        for j in range(1, len(cuts)):
            options = best[m - 1, :j] + (need[:j] - need[j]) * pairs[j]
            before[m, j] = int(np.argmin(options))
            best[m, j] = options[before[m, j]]
    specs = set()
    for m in range(1, _MAX_ATTENTION_LENGTHS + 1):
        if np.isfinite(best[m, -1]):
            spec, j = [], len(cuts) - 1
            for level in range(m, 0, -1):
                i = before[level, j]
                if need[i] > need[j]:
                    spec.append((int(need[i] - need[j]), int(cuts[j])))
                j = i
            specs.add(tuple(reversed(spec)))
    return sorted(specs)


def _text_lengths(segment_ids) -> list[int]:
    """Slots of each text (segment) of each row."""
    seg = np.asarray(segment_ids).reshape(-1, np.shape(segment_ids)[-1])
    return [int(n) for row in seg for n in np.bincount(row)[1:] if n]


def _flag_value(value) -> str:
    """A shape field as a command-line value: attention rows as [[count,length],...], no spaces."""
    if isinstance(value, tuple):
        return "[" + ",".join(f"[{count},{length}]" for count, length in value) + "]"
    return str(value)


def _print_work(report: dict, shape: PackingShape, proposed: PackingShape) -> None:
    print(f"  useful FLOPs {report['useful_fraction']:.1%} of executed (longest context {report['longest_context']}, "
          f"longest sample {report['longest_sample']} slots)")
    buffer = f"a loss buffer of {shape.loss_slots}" if shape.loss_slots else f"all {shape.decoder_len} slots (no loss buffer)"
    print(f"  output head on {buffer} a decoder row: {report['head_fill']:.1%} of them carry loss (at most "
          f"{report['most_loss_tokens_per_row']} loss tokens a row)")
    if proposed == shape:
        print("  the shape fits the data: nothing to propose")
        return
    changed = {k: v for k, v in dataclasses.asdict(proposed).items() if getattr(shape, k) != v}
    flags = " ".join(f"--config.data.shape.{k}={_flag_value(v)}" for k, v in changed.items())
    p = report["proposed"]
    print(f"  proposed: {flags}\n    -> useful {p['useful_fraction']:.1%} of executed, encoder fill "
          f"{p['encoder_fill']:.1%}, decoder fill {p['decoder_fill']:.1%}, loss slots filled {p['head_fill']:.1%} "
          "(measured on the same data; the spans are the longest texts seen: a longer one would be cut or dropped, "
          "and counted; the loss buffer holds the sample with the most loss tokens seen, and a row's samples "
          "stay within it, the rest wait for the next batch)")
