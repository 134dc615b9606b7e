"""Packing shapes for tests that put other samples in tiny_cpu's config.

configs/tiny_cpu.py's rows fit its pretraining samples: a decoder row of 84 slots holds one sample,
an encoder row of 64 one context. Few-shot and long-context samples are longer, so the tests that
pack them (and the sharding probe, whose collective bytes were measured on these activations) use
the shape tiny_cpu had before 2026-12-05: two samples or contexts a row."""

TWO_A_ROW = {"encoder_rows": 4, "encoder_len": 128, "decoder_rows": 4, "decoder_len": 168,
             "max_contexts_per_row": 4, "encoder_span": 0, "decoder_span": 0, "loss_slots": 128}


def two_a_row(**changes) -> list[str]:
    """TWO_A_ROW (with `changes`) as --config.data.shape.* overrides."""
    return [f"--config.data.shape.{k}={v}" for k, v in {**TWO_A_ROW, **changes}.items()]
