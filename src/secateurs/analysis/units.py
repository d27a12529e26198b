"""What a sensitivity scan perturbs: its units, and how each granularity prunes part of one unit for one
evaluation and then puts the model back exactly.

* **masks** (unstructured, N:M, or another mask pattern): a unit is one prunable parameter. The core engine
  (or a data-aware method) prunes it alone with a mask; afterwards its values and mask state are restored
  from a copy of that one parameter.
* **channels and heads**: a unit is one coupled group of the dependency graph (every tensor slice that goes
  with a channel or head). The removed units are zeroed in every member, on copies swapped in for the
  evaluation only. Zeroing computes the very function the shrunk model would (``shrink`` verifies exactly
  this), so nothing is cut and re-traced: cheaper than shrinking a copy, and the original is never touched.
* **layers**: a unit is one removable residual block, bypassed (its input handed on as its output), which is
  what removing it computes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from secateurs.core.amounts import Amount
from secateurs.core.criteria import Criterion
from secateurs.core.engine import LayerReport
from secateurs.core.masks import get_mask, remove_mask, set_mask
from secateurs.core.patterns import NM, Pattern
from secateurs.core.selection import select
from secateurs.core.summary import count_params
from secateurs.core.targets import Target
from secateurs.errors import PruningError
from secateurs.structural import DependencyGraph, Group, build_graph
from secateurs.structural.depth import bypassed, removable_blocks
from secateurs.structural.importance import score_groups
from secateurs.structural.planning import plan_keep
from secateurs.structural.surgery import kept_positions
from secateurs.structural.verify import removed_slices_zeroed, swapped

#: Prunes one target alone at an amount (None for N:M) and reports what it did.
PruneOne = Callable[[Target, "Amount | None"], LayerReport]
#: Why a method leaves a target alone (None: it prunes it).
SkipReason = Callable[[Target], "str | None"]


@dataclass(frozen=True)
class Unit:
    """One thing a scan prunes on its own: a parameter, a coupled channel group, a head group or a block."""

    name: str
    kind: str  # "parameter", "channel", "head" or "layer"
    #: How many prunable elements it has: weights (of a parameter, whatever the mask pattern), channels, heads;
    #: 1 block.
    size: int
    #: Parameters it holds: what removing all of it would remove.
    params: int
    #: The modules it touches (patterns match them too; activation reuse finds where it first runs).
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """What one perturbation removed: elements of the unit (weights newly zeroed, channels, heads, blocks),
    and parameters. Nothing removed means the dense model."""

    removed: int
    params_removed: int


class Perturber:
    """The units of one granularity, and :meth:`applied`: a unit pruned at an amount for the duration."""

    units: list[Unit]

    def prepare(self, how: Any) -> None:
        """The expensive part (scores, calibration evidence), once the units to scan are known."""

    def applied(self, unit: Unit, amount: float) -> contextlib.AbstractContextManager[Change]:
        raise NotImplementedError


class _SavedParameter:
    """One parameter's values and the masks its holders carry, to be put back exactly."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.values = target.param.detach().clone()
        self.masks = [(module, _copy(get_mask(module, target.param_name))) for _, module in target.holders]

    def restore(self) -> None:
        name = self.target.param_name
        for module, mask in self.masks:
            if mask is not None:
                set_mask(module, name, mask)
            elif get_mask(module, name) is not None:
                remove_mask(module, name)
        with torch.no_grad():
            self.target.param.copy_(self.values)


def _copy(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.clone()


def _fits(pattern: Pattern, target: Target) -> bool:
    try:
        pattern.validate(target)
    except PruningError:
        return False
    return True


class MaskPerturber(Perturber):
    """Mask patterns: each selected parameter the pattern (and the method) can prune is a unit."""

    def __init__(self, model: nn.Module, pattern: Pattern, skip: SkipReason | None = None) -> None:
        self.pattern = pattern
        selection = select(model)
        self.targets = {
            t.name: t for t in selection.targets if _fits(pattern, t) and (skip is None or skip(t) is None)
        }
        if not self.targets:
            raise PruningError(f"no selected parameter of {type(model).__name__} can be pruned with {pattern!r}")
        self.units = [
            Unit(t.name, "parameter", t.param.numel(), t.param.numel(), tuple(name for name, _ in t.holders))
            for t in self.targets.values()
        ]
        self.prune_one: PruneOne | None = None

    def prepare(self, how: PruneOne) -> None:
        self.prune_one = how

    @contextlib.contextmanager
    def applied(self, unit: Unit, amount: float) -> Iterator[Change]:
        assert self.prune_one is not None, "prepare() first"
        target = self.targets[unit.name]
        saved = _SavedParameter(target)
        try:
            layer = self.prune_one(target, None if isinstance(self.pattern, NM) else amount)
            zeroed = layer.zeros_after - layer.zeros_before  # weights already zero (or masked) change nothing
            yield Change(zeroed, zeroed)
        finally:
            saved.restore()


def _unique_names(groups: list[Group]) -> dict[str, Group]:
    named: dict[str, Group] = {}
    for group in groups:
        name = group.name if group.name not in named else f"{group.name}#{group.cls}"
        named[name] = group
    return named


def _param_tensors(graph: DependencyGraph, group: Group) -> list[str]:
    return list(dict.fromkeys(m.tensor for m in group.members if m.kind == "param"))


def _removed_params(graph: DependencyGraph, positions: dict[str, list[np.ndarray | None]]) -> int:
    """Parameters that removing the positions not kept would remove (what ``shrink`` would cut)."""
    removed = 0
    for name, kept in positions.items():
        if graph.holders[name][0].kind != "param":
            continue
        shape = graph.tensors[name].shape
        removed += math.prod(shape) - math.prod(size if p is None else len(p) for p, size in zip(kept, shape))
    return removed


class GroupPerturber(Perturber):
    """Channels or heads: each coupled group of the dependency graph is a unit."""

    def __init__(self, model: nn.Module, example_inputs: Any, granularity: str) -> None:
        self.graph = build_graph(model, example_inputs)
        groups = self.graph.groups(granularity)
        if not groups:
            raise PruningError(
                f"no prunable {granularity} groups in {type(model).__name__} (see "
                "secateurs.structural.build_graph(model, x).why_frozen(name)); try another granularity"
            )
        self.groups = _unique_names(groups)
        self.units = [
            Unit(name, g.kind, g.size, sum(self.graph.tensors[t].numel() for t in _param_tensors(self.graph, g)),
                 tuple(g.modules))
            for name, g in self.groups.items()
        ]
        self.scores: dict[int, torch.Tensor] = {}

    def prepare(self, how: Criterion) -> None:
        groups = list(self.groups.values())
        self.scores = score_groups(self.graph, groups, how, how.aggregate, how.scored_by)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def applied(self, unit: Unit, amount: float) -> Iterator[Change]:
        group = self.groups[unit.name]
        keep = plan_keep([group], self.scores, amount)
        if group.cls not in keep:
            yield Change(0, 0)
            return
        positions = {}
        for name in dict.fromkeys(m.tensor for m in group.members):
            kept = kept_positions(self.graph, name, keep)
            if any(p is not None for p in kept):
                positions[name] = kept
        with swapped(self.graph, removed_slices_zeroed(self.graph, positions)):
            yield Change(group.size - len(keep[group.cls]), _removed_params(self.graph, positions))


class DepthPerturber(Perturber):
    """Whole residual blocks: each removable block is a unit, scanned at one amount (removed)."""

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        blocks = removable_blocks(build_graph(model, example_inputs))
        if not blocks:
            raise PruningError(
                f"no removable blocks in {type(model).__name__}: a block is a module in a Sequential/ModuleList "
                "whose output has its input's shape and adds its input back; try another granularity"
            )
        self.blocks = {block.name: block for block in blocks}
        self.units = [Unit(b.name, "layer", 1, count_params(b.module), (b.name,)) for b in blocks]

    @contextlib.contextmanager
    def applied(self, unit: Unit, amount: float) -> Iterator[Change]:
        with bypassed([self.blocks[unit.name].module]):
            yield Change(1, unit.params)
