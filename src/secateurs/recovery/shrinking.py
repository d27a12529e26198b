"""The one call between cycles that makes structured recovery faster: remove pruned channels for real.

A shrink step is ``fn(model, target, reached) -> model | None``: bring the model from ``reached`` to
``target`` (fractions of the *original* channels removed) by physical surgery, in place or by
returning a new model. :func:`default_shrink` wraps :func:`secateurs.structural.shrink` (dependency graph,
coupled channels of residual streams and norms cut together, output checked against the masked model),
which takes an amount relative to the model as it is now, hence :func:`relative_amount`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from secateurs import structural
from secateurs.errors import PruningError

ShrinkFn = Callable[[nn.Module, float, float], "nn.Module | None"]


def relative_amount(target: float, reached: float) -> float:
    """Fraction of the channels left now that must go for ``target`` of the original ones to be gone."""
    if reached >= 1:
        raise PruningError("every channel is already gone; nothing is left to shrink")
    return max(0.0, 1.0 - (1.0 - target) / (1.0 - reached))


def default_shrink(example_inputs: Any, method: Any, scope: str, normalize_scores: bool,
                   options: Mapping[str, Any]) -> ShrinkFn:
    """Shrink with :func:`secateurs.structural.shrink` (channels; ``options`` such as ``exclude``, ``round_to``,
    ``min_keep`` go to it)."""

    def shrink_step(model: nn.Module, target: float, reached: float) -> nn.Module | None:
        amount = relative_amount(target, reached)
        if amount > 0:
            structural.shrink(model, example_inputs, amount=amount, granularity="channel", method=method, scope=scope,
                              normalize_scores=normalize_scores, **{**options, "allow_noop": True})
        return None

    return shrink_step
