"""What to score: how important each weight is.

A criterion turns a parameter into a tensor of the same shape holding one importance score per weight
(higher = more important). Patterns then reduce those scores over groups (rows, columns, N:M blocks)
with :meth:`Criterion.reduce`. Adding a criterion is one small class with a ``score`` method, registered
under a name with :func:`register_criterion`.

Scores must be deterministic: global ranking may compute them more than once to keep memory bounded.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from secateurs.core.targets import Target
from secateurs.errors import PruningError

#: The criterion every pruning call uses when none is named (prune, shrink, prune_with_data's magnitude
#: baseline, recovery and the CLI): the weight magnitude, |w| summed over a structured unit.
DEFAULT_CRITERION = "magnitude"

ScoreFn = Callable[..., torch.Tensor]


def score_dtype(param: torch.Tensor) -> torch.dtype:
    """Scores are float32, or float64 for float64 parameters, whatever the parameter's precision."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


class Criterion:
    """Base class: score each weight of a parameter; reduce scores over a group of weights."""

    name: ClassVar[str] = ""
    #: True when a weight's score depends on its own value only: global ranking then streams over
    #: parameters chunk by chunk instead of materialising every score tensor.
    pointwise: ClassVar[bool] = False
    #: Which weights score a channel in physical (structural) pruning: "outputs", the weights producing it,
    #: or "all", also those reading it (criteria that look at a layer's inputs need the readers).
    scored_by: str = "outputs"
    #: How physical pruning combines the scores of a unit's weights in different tensors: "sum", or "mean"
    #: for criteria whose every weight already carries its unit's whole score (block influence).
    aggregate: str = "sum"

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        raise NotImplementedError

    def score_values(self, values: torch.Tensor) -> torch.Tensor:
        """Scores of raw weight values; only pointwise criteria implement it."""
        raise NotImplementedError(f"{type(self).__name__} is not pointwise")

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Importance of a group from its members' scores (sum unless the criterion says otherwise)."""
        return scores.sum(dim=dims) if dims else scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[str, Callable[..., Criterion]] = {}


def register_criterion(*names: str) -> Callable[[Callable[..., Criterion]], Callable[..., Criterion]]:
    """Class decorator: make a criterion available by name to :func:`get_criterion`, recipes and the CLI."""

    def decorate(factory: Callable[..., Criterion]) -> Callable[..., Criterion]:
        for name in names:
            _REGISTRY[name.lower()] = factory
        return factory

    return decorate


def available_criteria() -> list[str]:
    return sorted(_REGISTRY)


def get_criterion(spec: str | Criterion, **options: Any) -> Criterion:
    """A criterion from a name (``"magnitude"``, ``"l2"``, ``"random"``, ...) or an instance (returned as is)."""
    if isinstance(spec, Criterion):
        if options:
            raise PruningError(f"options {sorted(options)} were given with a ready-made criterion {spec!r}")
        return spec
    if not isinstance(spec, str):
        raise PruningError(f"criterion must be a name or a Criterion, got {type(spec).__name__}")
    factory = _REGISTRY.get(spec.lower())
    if factory is None:
        raise PruningError(f"unknown criterion {spec!r}; available: {', '.join(available_criteria())}")
    if "seed" in options and "seed" not in inspect.signature(factory).parameters:
        options.pop("seed")  # a seed is accepted everywhere and used by the criteria that draw at random
    try:
        return factory(**options)
    except TypeError as exc:
        raise PruningError(f"criterion {spec!r} does not take options {sorted(options)}: {exc}") from None


@register_criterion("magnitude", "l1")
class Magnitude(Criterion):
    """|w|: small weights matter least. Groups are scored by their L1 norm."""

    name = "magnitude"
    pointwise = True

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        return self.score_values(param.detach())

    def score_values(self, values: torch.Tensor) -> torch.Tensor:
        return values.abs().to(score_dtype(values))


@register_criterion("ln", "norm")
class LnNorm(Magnitude):
    """Groups scored by the Ln norm of their weights (n = 1, 2, inf, or any p > 0); single weights by |w|."""

    name = "ln"

    def __init__(self, n: float | int | str = 2) -> None:
        if isinstance(n, str):
            n = math.inf if n.lower() in ("inf", "max") else float(n)
        if not (n == math.inf or (isinstance(n, (int, float)) and n > 0)):
            raise PruningError(f"Ln norm order must be positive or inf, got {n!r}")
        self.n = n

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not dims:
            return scores
        return torch.linalg.vector_norm(scores, ord=self.n, dim=dims)

    def __repr__(self) -> str:
        return f"LnNorm(n={self.n})"


register_criterion("l2")(lambda: LnNorm(2))
register_criterion("linf")(lambda: LnNorm(math.inf))


@register_criterion("random")
class Random(Criterion):
    """Uniform random scores, reproducible: each parameter draws from a generator seeded by
    ``(seed, parameter name)``. With ``seed=None`` the base seed is drawn once from torch's global RNG,
    so ``torch.manual_seed`` makes runs repeat."""

    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def _base_seed(self) -> int:
        if self.seed is None:
            self.seed = int(torch.randint(0, 2**62, ()).item())
        return self.seed

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        generator = torch.Generator(device="cpu")
        generator.manual_seed((self._base_seed() * 1_000_003 + zlib.crc32(target.name.encode())) % 2**63)
        scores = torch.rand(param.shape, generator=generator, dtype=score_dtype(param))
        return scores.to(param.device)

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """One uniform draw per group, whatever its size. A sum of draws grows with the group's size, so
        global structured pruning would rank every group of a small layer below those of a large one."""
        if not dims:
            return scores
        reduced = sorted(d % scores.dim() for d in dims)
        kept = [d for d in range(scores.dim()) if d not in reduced]
        moved = scores.permute(*kept, *reduced)
        return moved.reshape(*moved.shape[: len(kept)], -1)[..., 0]

    def __repr__(self) -> str:
        return f"Random(seed={self.seed})"


@register_criterion("custom", "scores")
class Custom(Criterion):
    """User-supplied importance: one tensor, a mapping from parameter name to tensor, or a function
    ``fn(param)`` / ``fn(param, target)`` returning a tensor shaped like the parameter."""

    name = "custom"

    def __init__(
        self,
        scores: torch.Tensor | Mapping[str, torch.Tensor] | ScoreFn,
        reduction: str = "sum",
    ) -> None:
        if reduction not in ("sum", "mean", "max"):
            raise PruningError(f"reduction must be 'sum', 'mean' or 'max', got {reduction!r}")
        self.scores = scores
        self.reduction = reduction

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        source = self.scores
        if isinstance(source, torch.Tensor):
            scores = source
        elif isinstance(source, Mapping):
            if target.name not in source:
                raise PruningError(
                    f"custom scores have no entry for {target.name}; give one for every selected parameter "
                    f"(have: {', '.join(list(source)[:8])})"
                )
            scores = source[target.name]
        else:
            try:
                scores = source(param.detach(), target)
            except TypeError:
                scores = source(param.detach())
        if not isinstance(scores, torch.Tensor) or scores.shape != param.shape:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise PruningError(
                f"custom scores for {target.name} have shape {shape}, the parameter {tuple(param.shape)}; "
                "give one score per weight"
            )
        return scores.detach().to(device=param.device, dtype=score_dtype(param))

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not dims:
            return scores
        if self.reduction == "max":
            return scores.amax(dim=dims)
        return scores.mean(dim=dims) if self.reduction == "mean" else scores.sum(dim=dims)

    def __repr__(self) -> str:
        return f"Custom(reduction={self.reduction!r})"


class LayerNormalized(Criterion):
    """Wrap a criterion so that group scores are relative to their layer: each group's score divided by
    the mean group score of the same tensor. Makes structured scores of differently sized layers
    comparable in a global ranking; single weights (unstructured) are left as they are."""

    def __init__(self, base: Criterion) -> None:
        self.base = base
        self.name = f"{getattr(base, 'name', '') or type(base).__name__}/layer-normalized"
        self.scored_by = base.scored_by
        self.aggregate = base.aggregate

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        return self.base.score(param, target)

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        groups = self.base.reduce(scores, dims)
        if not dims:
            return groups
        return groups / groups.mean().clamp_min(torch.finfo(groups.dtype).tiny)

    def __repr__(self) -> str:
        return f"LayerNormalized({self.base!r})"


def normalized_for_global(criterion: Criterion, normalize_scores: bool) -> Criterion:
    """``criterion`` wrapped in :class:`LayerNormalized` when asked (and not wrapped already): the one rule
    by which global structured ranking (``prune``, ``shrink``, the CLI and the demo) compares layers."""
    if normalize_scores and not isinstance(criterion, LayerNormalized):
        return LayerNormalized(criterion)
    return criterion
