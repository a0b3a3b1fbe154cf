"""The few exception types the library raises on purpose.

Every expected failure (a bad file, a bad config, weights that do not fit) is a `DecrappifyError`, so that the
CLI and the HTTP service can turn it into one clear line without a traceback, while a real bug still shows one.
"""

from __future__ import annotations

from pathlib import Path


class DecrappifyError(Exception):
    """Base class of all expected, user-facing failures."""


class InputError(DecrappifyError):
    """An input file cannot be used: missing, unreadable, corrupt, too large, or of an unsupported kind.

    The message always names the file, so a batch summary can be read line by line.
    """

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class OutputError(DecrappifyError):
    """An output cannot be written: it exists (and overwriting was not asked for), or it would replace an input."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(DecrappifyError):
    """A configuration value or command-line option is invalid; the message lists the valid choices."""


class WeightsError(DecrappifyError):
    """Weights are missing, corrupt, or do not match the model they are loaded into."""


class TrainingError(DecrappifyError):
    """Training stopped on purpose (for example a non-finite loss); the last good checkpoint is kept."""
