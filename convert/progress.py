"""Byte-counting progress for conversions: readers and writers report each tensor they move;
a bar shows it only while a caller (the CLI) has one open, otherwise reporting is free."""

from __future__ import annotations

import contextlib
import contextvars

from tqdm import tqdm

_bar: contextvars.ContextVar[tqdm | None] = contextvars.ContextVar("conversion_progress", default=None)


@contextlib.contextmanager
def progress_bar(description: str):
    bar = tqdm(desc=description, unit="B", unit_scale=True, unit_divisor=1024)
    token = _bar.set(bar)
    try:
        yield bar
    finally:
        _bar.reset(token)
        bar.close()


def advance(nbytes: int) -> None:
    bar = _bar.get()
    if bar is not None:
        bar.update(nbytes)
