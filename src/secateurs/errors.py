"""Errors raised by secateurs.

Every error names the problem and the fix. Raising one never leaves a model half-pruned:
plans are validated in full before anything is written to a model.
"""

from __future__ import annotations


class SecateursError(Exception):
    """Base class for every error secateurs raises on purpose."""


class PruningError(SecateursError, ValueError):
    """A pruning request that cannot be carried out as asked (bad amount, bad tensor, bad selection)."""


class NothingPrunedError(PruningError):
    """A request that would remove nothing (amount 0, or an amount that rounds to no unit): refused, because a
    silent no-op looks like success. The message names the smallest amount that acts; ``allow_noop=True`` accepts it."""


class SelectionError(PruningError):
    """Include/exclude patterns or module types that select nothing, or name something that is not there."""


class UnsupportedOperationError(SecateursError, NotImplementedError):
    """An operation the dependency analysis does not understand; never guessed around silently."""


class ModelSpecError(SecateursError, ValueError):
    """A model spec, input shape or data set name that does not name something loadable (bad usage)."""


class InputShapeError(ModelSpecError):
    """The example input does not fit the model."""


class FactoryError(SecateursError):
    """User code that secateurs called (a ``python:MODULE:FUNCTION`` factory, metric or data source) raised;
    the message names the spec and the original error."""


class MissingDependencyError(SecateursError, ImportError):
    """The request needs a Python package that is not installed; the message names the pip command."""
