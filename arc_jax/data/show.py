"""`arc-jax data show`: the first samples of a config's pipeline as the decoder reads them, so data
can be looked at before accelerator hours are spent on it.

Samples are read back from the packed TrainBatch the train step receives, not from the task
functions' Samples: whatever layout tasks.py gives a sample, the batch holds exactly what the
decoder reads. A sample is one segment of a decoder row; its slots, in order, become pieces:

    {"text": str, "loss": bool}        a run of text tokens (compressed_index -1), decoded
    {"compressed": int, "text": str}   a block of table rows from one encoder text (one segment of
                                       one encoder row); "text" is that encoder text, decoded
    {"special": "rec" | "cont"}        a special-vector row (the two rows after all encoder rows)

Loss convention: a text token is marked loss when the decoder is trained to produce it: it is the
target, with loss, of a slot before it: the previous text slot or a slot between the two (so
across a compressed block, the last text slot before the block where a layout trains that
prediction, or a vector slot where a layout gives vectors targets). A token whose prediction
carries no loss (the prompt, a token read right after a block but not predicted) is not marked. A
run of text splits where this changes. The sample's last target (a span's last token, an <eos>)
is no input token, so no piece holds it; the human form prints it after the sample.

Text is decoded with the tokenizer, each run after the text tokens before it (so a word's leading
space stays); bos, eos and pad ids, which tokenizers decode to nothing, read "<bos>", "<eos>" and
"<pad>". The task is printed as reconstruction, continuation, few_shot or long_context.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from arc_jax.config_loading import to_plain
from arc_jax.data.config import parse_data_config
from arc_jax.data.packing import TASKS, TrainBatch
from arc_jax.data.pipeline import build_batches
from arc_jax.errors import ConfigError
from arc_jax.model.config import EncoderConfig

if TYPE_CHECKING:
    from arc_jax.data.tokenizers import Tokenizer

TASK_NAMES = {"fewshot": "few_shot"}  # arc_jax's names that data show prints otherwise
SPECIALS = ("rec", "cont")  # table rows encoder_rows * out_len + 0, + 1 (data/packing.py)
LEGEND = ("legend: «…» tokens trained with loss (targets) · [C xK: \"…\"] K compressed vectors and the start "
          "of the text the encoder read · <Rec>/<Cont> special vectors · \\n a newline")
_DECODE_CONTEXT = 8  # text tokens decoded before a run, so that its first word keeps its space
_PREVIEW = 48  # characters of a compressed text the human form prints


@dataclasses.dataclass(frozen=True)
class ShownSample:
    task: str
    decoder: int
    pieces: list[dict]
    last_target: str | None  # the text of the sample's last target when it carries loss
    row: int  # the decoder row of the batch that holds the sample
    spans: list[tuple[int, int]]  # per piece, its slots [start, end) in that row

    def as_json(self) -> dict:
        return {"task": self.task, "decoder": self.decoder, "pieces": self.pieces}


class _Table:
    """Where a batch's compressed-vector table rows come from: (encoder row, segment) or a special."""

    def __init__(self, batch: TrainBatch):
        enc = batch.encoder
        if enc.output_index is not None:  # memory tokens: the outputs are the memory slots' states
            self.out_segments = np.take_along_axis(enc.segment_ids, enc.output_index, axis=1)
        elif enc.stages:
            self.out_segments = enc.stages[-1].segment_ids
        else:
            self.out_segments = enc.segment_ids
        self.out_len = self.out_segments.shape[1]
        self.special_base = enc.tokens.shape[0] * self.out_len
        self.encoder = enc

    def source(self, index: int) -> tuple[int, int] | str:
        if index >= self.special_base:
            return SPECIALS[index - self.special_base]
        row, slot = divmod(index, self.out_len)
        return row, int(self.out_segments[row, slot])

    def text_ids(self, row: int, segment: int) -> list[int]:
        keep = self.encoder.segment_ids[row] == segment
        if self.encoder.memory_ids is not None:
            keep &= self.encoder.memory_ids[row] < 0
        return self.encoder.tokens[row][keep].tolist()


def decode_text(tok: Tokenizer, ids: list[int], before: list[int]) -> str:
    """`ids` decoded; control ids named; ordinary runs decoded after the text tokens `before` them."""
    names = {tok.bos_id: "<bos>", tok.eos_id: "<eos>"}
    if getattr(tok, "pad_id", None) is not None:
        names.setdefault(tok.pad_id, "<pad>")
    out, context = [], list(before)
    for is_control, run in itertools.groupby(ids, key=lambda i: i in names):
        run = list(run)
        if is_control:
            out.append("".join(names[i] for i in run))
            continue
        tail = context[-_DECODE_CONTEXT:]
        head, full = tok.decode(tail), tok.decode(tail + run)
        out.append(full[len(head):] if tail and full.startswith(head) else tok.decode(run))
        context += run
    return "".join(out)


def _slot_kinds(batch: TrainBatch, row: int, slots: np.ndarray, table: _Table) -> list[tuple]:
    """Per slot: ("text", token, loss), ("compressed", (encoder row, segment)) or ("special", name, slot)."""
    kinds, prev_text = [], int(slots[0])
    for j in slots:
        index = int(batch.compressed_index[row, j])
        if index >= 0:
            source = table.source(index)
            kinds.append(("special", source, int(j)) if isinstance(source, str) else ("compressed", source))
            continue
        token = int(batch.tokens[row, j])
        loss = any(batch.loss_mask[row, i] > 0 and batch.targets[row, i] == token for i in range(prev_text, j))
        kinds.append(("text", token, loss))
        prev_text = int(j)
    return kinds


def _run_key(kind: tuple) -> tuple:
    """Slots of one piece share this: a text run its loss flag, a compressed block its encoder text, a
    special vector its own slot (each is a piece)."""
    return kind[0], kind[1] if kind[0] == "compressed" else kind[2]


def sample_pieces(batch: TrainBatch, row: int, segment: int, table: _Table, decoder: int, decoder_tok: Tokenizer,
                  encoder_tok: Tokenizer) -> ShownSample:
    """One segment of a decoder row as a ShownSample."""
    slots = np.flatnonzero(batch.segment_ids[row] == segment)
    pieces, spans, before, k = [], [], [], 0
    for (kind, key), run in itertools.groupby(_slot_kinds(batch, row, slots, table), key=_run_key):
        run = list(run)
        if kind == "text":
            ids = [r[1] for r in run]
            pieces.append({"text": decode_text(decoder_tok, ids, before), "loss": bool(key)})
            before += ids
        elif kind == "compressed":
            pieces.append({"compressed": len(run), "text": decode_text(encoder_tok, table.text_ids(*key), [])})
        else:
            pieces.append({"special": run[0][1]})
        spans.append((int(slots[k]), int(slots[k + len(run) - 1]) + 1))
        k += len(run)
    last = int(slots[-1])
    last_target = (decode_text(decoder_tok, [int(batch.targets[row, last])], before)
                   if batch.loss_mask[row, last] > 0 else None)
    task = TASKS[int(batch.task_ids[row, slots[0]])]
    return ShownSample(TASK_NAMES.get(task, task), decoder, pieces, last_target, row, spans)


def batch_samples(batch: TrainBatch, decoder: int, decoder_tok: Tokenizer, encoder_tok: Tokenizer
                  ) -> Iterator[ShownSample]:
    """The samples of a batch in the order the decoder rows hold them."""
    table = _Table(batch)
    for row in range(batch.tokens.shape[0]):
        for segment in np.unique(batch.segment_ids[row]):
            if segment > 0:
                yield sample_pieces(batch, row, int(segment), table, decoder, decoder_tok, encoder_tok)


def shown_samples(config, decoder_order: Iterable[int] | None = None) -> Iterator[ShownSample]:
    """Samples of the config's pipeline as a one-process run reads them, batch by batch; batch i is
    drawn for decoder decoder_order[i] (default: decoder 0 throughout)."""
    data = parse_data_config(config.data)
    encoder = EncoderConfig.from_dict(to_plain(config.model.encoder))
    decoders = config.model.get("decoders") or []
    feeds = {}
    for d in itertools.repeat(0) if decoder_order is None else decoder_order:
        if d not in feeds:
            if not 0 <= d < len(decoders) or "tokenizer" not in decoders[d]:
                raise ConfigError(f"config.model.decoders[{d}].tokenizer: no such field (the decoder's tokenizer)")
            feeds[d] = build_batches(data, encoder, config.seed, decoders[d].tokenizer, process_index=0,
                                     process_count=1)
        batch, _ = next(feeds[d])
        maker = feeds[d].maker
        yield from batch_samples(batch, d, maker.decoder_tok, maker.encoder_tok)


def format_sample(number: int, sample: ShownSample) -> str:
    """The human form of a sample: a header line and its pieces on one indented line."""
    parts = []
    for p in sample.pieces:
        if "special" in p:
            parts.append(f"<{p['special'].capitalize()}>")
        elif "compressed" in p:
            preview = p["text"] if len(p["text"]) <= _PREVIEW else p["text"][:_PREVIEW] + "…"
            parts.append(f"[C x{p['compressed']}: {json.dumps(preview, ensure_ascii=False)}]")
        else:
            parts.append(f"«{p['text']}»" if p["loss"] else p["text"])
    lines = [f"sample {number} · {sample.task} · decoder {sample.decoder}",
             "  " + "".join(parts).replace("\n", "\\n")]
    if sample.last_target is not None:
        lines.append(f"  then predicts «{sample.last_target}»".replace("\n", "\\n") + " (the last target, not an input token)")
    return "\n".join(lines)


def data_show(config, n: int = 4, as_json: bool = False, decoder_order: Iterable[int] | None = None,
              config_name: str = "the config", out=None) -> list[ShownSample]:
    """Print the first `n` samples of the config's pipeline: one JSON object a line with `as_json`,
    else the human form with a legend and a summary line. Returns them."""
    if n < 1:
        raise ConfigError(f"--n {n}: show at least 1 sample")
    out = out or sys.stdout
    samples = list(itertools.islice(shown_samples(config, decoder_order), n))
    if as_json:
        for s in samples:
            print(json.dumps(s.as_json(), ensure_ascii=False), file=out)
        return samples
    print(LEGEND, file=out)
    for i, s in enumerate(samples, start=1):
        print(format_sample(i, s), file=out)
    data = parse_data_config(config.data)
    print(f"{len(samples)} sample(s) of {config_name}: config.data.task={data.task}, sources "
          f"{data.resolve(data.sources)}", file=out)
    return samples
