"""`arc-jax data check`: run a config's input pipeline for some batches and report what it made,
so data can be validated before accelerator hours are spent on it."""

from __future__ import annotations

import time

from tqdm import tqdm

from arc_jax.config_loading import to_plain
from arc_jax.data.config import parse_data_config
from arc_jax.data.pipeline import build_batches
from arc_jax.model.config import EncoderConfig


_EVENTS = {
    "carried_over": "carried over to the next batch",
    "context_truncated": "contexts truncated to encoder_len",
    "sample_too_long": "samples dropped: longer than decoder_len",
    "does_not_fit_a_batch": "samples dropped: they fit no empty batch",
}


def data_check(config, n_batches: int = 20) -> dict:
    """Iterate `n_batches` batches; print and return counts, packing efficiency and throughput.

    Reads what the input pipeline reads, checked: config.data, the encoder, the seed and the first
    decoder's tokenizer. The mesh is not resolved: a check may run on a machine other than the run's."""
    data = parse_data_config(config.data)
    encoder = EncoderConfig.from_dict(to_plain(config.model.encoder))
    batches = build_batches(data, encoder, config.seed, config.model.decoders[0].tokenizer)
    start = time.perf_counter()
    for _ in tqdm(range(n_batches), desc="data check", unit="batch"):
        next(batches)
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
    return report
