"""Host-side preparation of the inputs of the jitted inference programs: token-id checks and the
few padded lengths they are compiled for, so calls of similar sizes reuse one program."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arc_jax.model.config import EncoderConfig
from arc_jax.model.inputs import round_up
from arc_jax.model.pooling import pooled_row_lengths


def bucket_length(n: int, minimum: int = 16, per_octave: int = 1) -> int:
    """Smallest power of two >= n (and >= minimum): few distinct shapes, few compilations. With
    per_octave > 1, the smallest of `per_octave` evenly spaced lengths in n's octave (multiples of
    `minimum`): less padding, more programs (1057 -> 2048, or 1152 with per_octave=8)."""
    power = max(minimum, 1 << (max(n, 1) - 1).bit_length())
    step = max(minimum, power // (2 * per_octave))
    return -(-max(n, 1) // step) * step


def device_table(table: np.ndarray | None, dim: int, dtype) -> jax.Array:
    """Compressed vectors [n, dim] for the decoder: zero rows appended up to a multiple of 8 (few
    program shapes), on the device in `dtype` (cast there: numpy's bfloat16 conversion of a long
    context's vectors takes longer than the decoder's prefill)."""
    n = 0 if table is None else len(table)
    padded = np.zeros((bucket_length(n, 8), dim), np.float32)
    if n:
        padded[:n] = table
    return jnp.asarray(padded).astype(dtype)


def stage_lengths(cfg: EncoderConfig, row_len: int, texts_per_row: int) -> list[int]:
    """Encoder row lengths after each pooling layer: the bound for texts_per_row rounded up to a
    power of two, each a multiple of 8. One program per (row length, texts-per-row bucket), and a
    single text of 1024 tokens pooled by 4 keeps 264 slots, not 512."""
    bounds = pooled_row_lengths(row_len, cfg.pooling_factors, bucket_length(texts_per_row, 1))
    return [round_up(n, 8) for n in bounds]


def check_token_ids(ids: Sequence[Sequence[int]], vocab_size: int, what: str) -> list[list[int]]:
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        raise TypeError(f"{what}: expected a list of token-id lists, got a single 1-D array")
    out = []
    for i, seq in enumerate(ids):
        seq = [int(t) for t in seq]
        if not seq:
            raise ValueError(f"{what}[{i}] is empty")
        bad = [t for t in seq if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"{what}[{i}] holds token id {bad[0]} outside the vocabulary [0, {vocab_size})")
        out.append(seq)
    return out
