"""What a user asks an allocation for: a budget as a ratio of the dense model, a largest metric drop, or both.

    parse_target("macs=0.5")                 # at most half the dense model's multiply-accumulates
    parse_target("latency=0.5", max_drop=1)  # half the latency, and say if that costs over 1 point
    parse_target(None, max_drop=1.0)         # as much as 1 point of the metric buys

=============  ==========================================================================================
``sparsity``   masks: the share of the allocated layers' weights that are zero (``--amount`` with
               ``--target``); with ``shrink`` it reads as ``params = 1 - sparsity``
``params``     parameters left (masks: nonzero parameters) over the dense model's parameters
``macs``       multiply-accumulates left (masks: those touching a nonzero weight) over the dense MACs
``size``       bytes on disk over the dense safetensors file (masks: secateurs' sparse format)
``latency``    time of one forward pass over the dense model's, measured here (``shrink`` only: masks
               leave dense kernels just as slow)
=============  ==========================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secateurs.errors import PruningError

#: What a target may budget, each a ratio of the dense model (see the module docstring).
TARGET_KINDS = ("sparsity", "params", "macs", "latency", "size")
TARGET_USAGE = "KIND=RATIO with KIND one of " + ", ".join(TARGET_KINDS) + " and RATIO in (0, 1), e.g. macs=0.5"


class UnreachableTargetError(PruningError):
    """A budget that even the largest amounts allowed cannot reach; ``reachable`` is the least ratio they reach."""

    def __init__(self, message: str, reachable: float) -> None:
        super().__init__(message)
        self.reachable = reachable


@dataclass(frozen=True)
class Target:
    """A budget (``kind`` and ``ratio`` of the dense model), a largest metric drop (``max_drop``, in the
    metric's points), or both. Without a budget the allocation removes as much as ``max_drop`` allows."""

    kind: str | None = None
    ratio: float | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.kind is None and self.ratio is None and self.max_drop is None:
            raise PruningError(f"give a target ({TARGET_USAGE}) or max_drop (metric points), or both")
        if (self.kind is None) != (self.ratio is None):
            raise PruningError(f"a target needs both a kind and a ratio: {TARGET_USAGE}")
        if self.kind is not None and self.kind not in TARGET_KINDS:
            raise PruningError(f"unknown target {self.kind!r}: use one of {', '.join(TARGET_KINDS)}")
        if self.ratio is not None and not (isinstance(self.ratio, (int, float)) and 0 < self.ratio < 1):
            raise PruningError(f"target ratio {self.ratio!r} is not in (0, 1): it is a ratio of the dense model, e.g. 0.5")
        if self.max_drop is not None and not (
            isinstance(self.max_drop, (int, float)) and math.isfinite(self.max_drop) and self.max_drop >= 0
        ):
            raise PruningError(f"max_drop={self.max_drop!r} must be a number of metric points, 0 or more (e.g. 1.0)")

    @property
    def budget(self) -> float | None:
        """The largest cost allowed as a ratio of dense: ``1 - sparsity`` for a sparsity target."""
        if self.ratio is None:
            return None
        return 1.0 - self.ratio if self.kind == "sparsity" else float(self.ratio)

    def reading(self, cost_ratio: float | None) -> float | None:
        """A cost ratio (what is left over dense) in the target's own terms: the share of zeros for sparsity."""
        if cost_ratio is None:
            return None
        return 1.0 - cost_ratio if self.kind == "sparsity" else cost_ratio

    def __str__(self) -> str:
        parts = [] if self.kind is None else [f"{self.kind}={self.ratio:g}"]
        if self.max_drop is not None:
            parts.append(f"max_drop={self.max_drop:g}")
        return ", ".join(parts)


def parse_target(text: str | Target | None, *, max_drop: float | None = None) -> Target:
    """``"KIND=RATIO"`` (see the module docstring) and/or ``max_drop`` as a checked :class:`Target`."""
    if isinstance(text, Target):
        return text if max_drop is None else Target(text.kind, text.ratio, max_drop)
    if text is None:
        return Target(max_drop=max_drop)
    if not isinstance(text, str) or text.count("=") != 1:
        raise PruningError(f"target {text!r} is not {TARGET_USAGE}")
    kind, _, value = (part.strip() for part in text.partition("="))
    if kind not in TARGET_KINDS:
        raise PruningError(f"unknown target {kind!r} in {text!r}: use one of {', '.join(TARGET_KINDS)}")
    try:
        ratio = float(value.removesuffix("%")) / (100 if value.endswith("%") else 1)
    except ValueError:
        raise PruningError(f"target {text!r}: {value!r} is not a number; write {kind}=0.5 or {kind}=50%") from None
    return Target(kind, ratio, max_drop)
