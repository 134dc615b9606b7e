"""The one exception converters raise: its message is a single line naming the file and problem.
It is one of arc_jax's expected failures (arc_jax.errors), so the CLI reports it like the others."""

from arc_jax.errors import ConversionError  # noqa: F401  (every converter imports it from here)
