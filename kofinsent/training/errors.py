"""The training package's error, in a module of its own at the bottom of the package: every training module raises
it, and none has to import the engine that runs them to do so."""
from __future__ import annotations


class TrainError(Exception):
    """A training run cannot start: bad data, bad options, an occupied output directory, a missing dependency."""


__all__ = ["TrainError"]
