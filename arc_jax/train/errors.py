"""Errors of a training run that the CLI reports in one line (exit status 2)."""

from arc_jax.errors import TrainingError


class TrainingStopped(TrainingError, RuntimeError):  # still a RuntimeError for callers that caught that
    """Training cannot go on (e.g. too many consecutive non-finite steps); checkpoints are intact."""


class DamagedCheckpoint(TrainingError):
    """A checkpoint item that does not restore (truncated or missing files): one line naming it."""


class SaveFailed(TrainingError):
    """A checkpoint that could not be written (full disk, read-only folder); earlier ones are intact."""
