"""The methods :func:`secateurs.data.prune_with_data` offers, one small registered class each.

A method declares what it reads from calibration data (:class:`Needs`), the granularities it prunes,
its default comparison scope, how it prunes one block and how it ranks the units ``shrink`` removes.
Pruning, unit ranking and the request checks only dispatch through this registry, so adding a method is
one class here; its tensor math lives apart (:mod:`~secateurs.data.criteria`,
:mod:`~secateurs.data.sparsegpt`)::

    @register_method("my_score")
    class MyScore(DataMethod):
        needs = Needs.INPUT_NORMS

        def criterion(self, evidence: InputStatistics) -> Criterion:
            return MyCriterion(evidence)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, TypeVar

import torch

from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from secateurs.core.engine import LayerReport, prune_targets
from secateurs.core.patterns import NM, Block, Pattern, Structured, Unstructured
from secateurs.core.targets import Target
from secateurs.data.criteria import Activation, Taylor, Wanda
from secateurs.data.gradients import GradientStatistics
from secateurs.data.sparsegpt import is_supported, prune_layer
from secateurs.data.statistics import InputStatistics
from secateurs.errors import PruningError


class Needs(Enum):
    """What a method reads from calibration data; it decides how the data runs through the model."""

    NOTHING = "nothing"
    #: Sums of squares of each layer's input features, gathered block by block.
    INPUT_NORMS = "input norms"
    #: ``Σ x xᵀ`` of each layer's input, gathered block by block.
    HESSIAN = "input Hessian"
    #: ``|W ⊙ ∂L/∂W|`` from forward and backward passes of the whole model.
    GRADIENTS = "gradients"

    @property
    def reads_inputs(self) -> bool:
        """Input statistics: gathered one block at a time, on inputs that earlier pruned blocks produced."""
        return self in (Needs.INPUT_NORMS, Needs.HESSIAN)


@dataclass(frozen=True)
class BlockRequest:
    """How each block is pruned: the pattern, the comparison scope, and SparseGPT's solver settings."""

    pattern: Pattern
    scope: str
    block_size: int = 128
    damping: float = 0.01


class DataMethod:
    """One pruning method of :func:`~secateurs.data.prune_with_data`; ``evidence`` is what :attr:`needs`
    gathered (:class:`~secateurs.data.InputStatistics`, gradient statistics, or ``None``)."""

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs.NOTHING
    #: The comparison group for unstructured and block pruning when the caller names none (others: "local");
    #: "row" ranks within each output row, or each row of tiles for blocks.
    default_scope: ClassVar[str] = "local"
    #: The pattern classes the method prunes, and the error that says what to use instead.
    granularities: ClassVar[tuple[type[Pattern], ...]] = (Pattern,)
    granularity_hint: ClassVar[str] = ""
    #: False for a method that only prunes weights inside rows: it cannot rank units for ``shrink``.
    ranks_units: ClassVar[bool] = True

    def resolve_scope(self, pattern: Pattern, scope: str | None) -> str:
        """The scope to prune with, or a :class:`PruningError` when the method cannot prune ``pattern``."""
        if not isinstance(pattern, self.granularities):
            raise PruningError(self.granularity_hint)
        if scope is not None:
            return scope
        return self.default_scope if isinstance(pattern, (Unstructured, Block)) else "local"

    def skip_reason(self, target: Target) -> str | None:
        """Why this method leaves ``target`` alone (reported as skipped), or ``None``."""
        return None

    def criterion(self, evidence: Any) -> Criterion:
        """The criterion that scores weights from the evidence."""
        raise NotImplementedError(f"{type(self).__name__} prunes without a criterion")

    def unit_criterion(self, evidence: Any) -> Criterion:
        """The criterion that ranks whole units (channels, heads) from evidence on the dense model."""
        return self.criterion(evidence)

    def prune_block(
        self, targets: Sequence[Target], evidence: Any, amount: float | None, request: BlockRequest
    ) -> list[LayerReport]:
        """Prune ``targets`` (one block, or the whole model for scope ``"global"``); per-layer results."""
        criterion = self.criterion(evidence)
        return prune_targets(
            targets, amount, method=criterion, granularity=request.pattern, scope=request.scope, allow_noop=True
        ).layers


_METHODS: dict[str, type[DataMethod]] = {}
Method = TypeVar("Method", bound=type[DataMethod])


def register_method(name: str) -> Callable[[Method], Method]:
    """Class decorator: offer a :class:`DataMethod` to ``prune_with_data(method=name)`` and ``unit_criterion``."""

    def register(cls: Method) -> Method:
        cls.name = name
        _METHODS[name] = cls
        return cls

    return register


def available_methods() -> list[str]:
    """The data-aware methods: those that read calibration data (the magnitude baseline does not)."""
    return [name for name, cls in _METHODS.items() if cls.needs is not Needs.NOTHING]


def get_method(name: str) -> DataMethod:
    """The registered method called ``name``."""
    cls = _METHODS.get(name)
    if cls is None:
        raise PruningError(f"unknown data-aware method {name!r}; use one of {', '.join(_METHODS)}")
    return cls()


@register_method("magnitude")
class MagnitudeBaseline(DataMethod):
    """|w| on the same layers and with the same report as the data-aware methods: the data-free baseline."""

    def criterion(self, evidence: None) -> Criterion:
        return get_criterion(DEFAULT_CRITERION)


@register_method("wanda")
class WandaMethod(DataMethod):
    """Wanda (|W| · ‖X‖), compared within each output row as in the paper (blocks: within each row of tiles)."""

    needs = Needs.INPUT_NORMS
    default_scope = "row"

    def criterion(self, evidence: InputStatistics) -> Criterion:
        return Wanda(evidence)

    def unit_criterion(self, evidence: InputStatistics) -> Criterion:
        return Wanda(evidence, missing="zero")


def _zeros(param: torch.Tensor) -> int:
    return param.numel() - int(torch.count_nonzero(param.detach()))


@register_method("sparsegpt")
class SparseGPTMethod(DataMethod):
    """SparseGPT: chooses each layer's mask column block by column block and reconstructs the rest."""

    needs = Needs.HESSIAN
    granularities = (Unstructured, NM)
    granularity_hint = (
        "SparseGPT prunes unstructured or N:M; for rows/columns use wanda or activation, for blocks wanda or magnitude"
    )
    ranks_units = False

    def resolve_scope(self, pattern: Pattern, scope: str | None) -> str:
        super().resolve_scope(pattern, None)
        if scope is not None:
            raise PruningError("SparseGPT chooses its own mask block by block; leave scope unset")
        return "column blocks"

    def skip_reason(self, target: Target) -> str | None:
        if is_supported(target.module):
            return None
        return f"SparseGPT handles Linear layers, not {type(target.module).__name__}"

    def prune_block(
        self, targets: Sequence[Target], evidence: InputStatistics, amount: float | None, request: BlockRequest
    ) -> list[LayerReport]:
        pattern = request.pattern
        n_m = (pattern.n, pattern.m) if isinstance(pattern, NM) else None
        layers = []
        for target in targets:
            zeros_before = _zeros(target.param)
            keep = prune_layer(
                target, evidence.hessian(target.module, target.name), sparsity=None if n_m else amount, n_m=n_m,
                block_size=request.block_size, damping=request.damping, overwrite_hessian=True,
            )  # fmt: skip
            param = target.param.detach()
            layers.append(LayerReport(
                name=target.name, shape=tuple(param.shape), groups=keep.numel(), groups_pruned=int((~keep).sum()),
                params=param.numel(), zeros_before=zeros_before, zeros_after=_zeros(param),
            ))  # fmt: skip
        return layers


@register_method("taylor")
class TaylorMethod(DataMethod):
    """First-order Taylor |w · ∂L/∂w|: needs a loss and gradients through the whole model."""

    needs = Needs.GRADIENTS

    def criterion(self, evidence: GradientStatistics) -> Criterion:
        return Taylor(evidence)


@register_method("activation")
class ActivationMethod(DataMethod):
    """RMS of the input feature each weight reads: ranks neurons and heads, so structured patterns only."""

    needs = Needs.INPUT_NORMS
    granularities = (Structured,)
    granularity_hint = "activation scores rank whole neurons; use a structured pattern such as 'in'"

    def criterion(self, evidence: InputStatistics) -> Criterion:
        return Activation(evidence)

    def unit_criterion(self, evidence: InputStatistics) -> Criterion:
        return Activation(evidence, missing="zero")
