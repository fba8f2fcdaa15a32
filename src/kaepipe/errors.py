"""Exceptions that name the problem: which config key, which file, which epoch."""

from __future__ import annotations


class KaepipeError(Exception):
    """Base class of every error kaepipe raises on purpose."""


class ConfigError(KaepipeError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class DataError(KaepipeError, ValueError):
    """An input file is missing, damaged or does not hold what was expected."""


class TrainingDivergedError(KaepipeError, RuntimeError):
    """A loss or a parameter became non-finite during training."""

    def __init__(self, epoch: int, term: str, value: float) -> None:
        self.epoch, self.term, self.value = epoch, term, value
        super().__init__(
            f"training diverged at epoch {epoch}: loss term '{term}' became {value} "
            "(lower the learning rate or check the inputs); no checkpoint was written"
        )
