"""Errors of a training run that the CLI reports in one line (exit status 2)."""


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. too many consecutive non-finite steps); checkpoints are intact."""
