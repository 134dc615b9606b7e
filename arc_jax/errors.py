"""The failures arc_jax expects: bad input, a bad config, an unreadable checkpoint, a run that cannot go
on. Each carries a one-line message naming what is wrong, and the CLI prints it as
"arc-jax <command>: error: <message>" (exit status 2) instead of a traceback. Anything else is a bug
and keeps its traceback.

`--debug` (or ARC_JAX_DEBUG=1) shows their tracebacks too, and the messages of the libraries
underneath that arc_jax otherwise reports in its own line (`debugging()`).

A leaf module: every room may raise these, so it imports nothing from arc_jax.
"""

from __future__ import annotations

import os

DEBUG_VARIABLE = "ARC_JAX_DEBUG"


def debugging() -> bool:
    """Whether the user asked for full tracebacks and every library message (ARC_JAX_DEBUG set and
    not "0"; `arc-jax --debug` sets it)."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class ArcJaxError(Exception):
    """An expected failure the CLI reports as one line."""


class DataError(ArcJaxError):
    """A bad record in strict mode, or unusable input (missing file, empty source): one line."""


class ConfigError(ArcJaxError, ValueError):
    """A missing config file, an unknown field, a value of the wrong type: one line.

    Also a ValueError, as it always was, so callers that catch ValueError around config loading
    still catch it."""


class ConversionError(ArcJaxError):
    """The one exception converters raise: its message is a single line naming the file and problem."""


class TrainingError(ArcJaxError):
    """Training cannot go on; checkpoints are intact."""
