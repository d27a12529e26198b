"""The units an allocation spreads amounts over, what each keeps at an amount, and the data-free proxy.

Units are a sensitivity scan's (:mod:`secateurs.analysis.units`): each prunable parameter for mask patterns,
each coupled channel group or attention block's heads, or each removable residual block, for ``shrink``. A
unit at amount ``a`` keeps:

* a group: the channels or heads ``shrink(per_layer={group: a}, round_to=...)`` keeps (the same plan);
* a block: itself (1) at amount 0, nothing (0) at amount 1 (:mod:`secateurs.analysis.block_units`);
* a parameter: its nonzero weights after ``prune(per_layer={param: a})`` (absolute amounts: the final share of
  zeros), counted from the plan for patterns other than unstructured, or from a scan's ``removed`` counts.

**The data-free proxy** predicts a unit's drop at an amount from the share of the unit's importance that
pruning removes, ``s`` (the criterion's scores of what goes over the scores of the whole unit: 0 untouched,
1 all gone), as ``s**2``: each layer's share is a relative error in what it passes on, and independent
errors add in quadrature, so spreading a loss over many layers costs less than concentrating it in a few
(a sum of shares would empty the cheapest layers first). Every unit weighs the same, so losing half of a
16-channel layer's importance costs as much as losing half of a 512-channel layer's. It reads no data and
runs no forward pass; a scan's curves see what it cannot (a fragile first layer whose filters all look
alike). Blocks have no importance shares: their proxy is their influence on the example inputs (one forward
pass, :func:`~secateurs.analysis.block_units.block_influences`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from secateurs.analysis.block_units import block_influences, not_excluded
from secateurs.analysis.units import DepthPerturber, GroupPerturber, MaskPerturber
from secateurs.core.amounts import amount_count
from secateurs.core.criteria import Criterion, get_criterion
from secateurs.core.engine import plan_masks
from secateurs.core.patterns import NM, Pattern, Unstructured, parse_pattern
from secateurs.core.selection import name_matcher
from secateurs.core.targets import Target
from secateurs.data import available_methods
from secateurs.data.methods import get_method
from secateurs.data.sequential import block_stack
from secateurs.errors import PruningError, SelectionError
from secateurs.structural import DependencyGraph, Group
from secateurs.structural.depth import Block
from secateurs.structural.planning import plan_keep

#: Granularities whose units are groups of the dependency graph (``shrink``).
GROUP_GRANULARITIES = ("channel", "head")


@dataclass
class UnitSpace:
    """The units of one granularity: names in model order, and the groups or parameters behind them."""

    granularity: str
    names: list[str]
    groups: list[Group] | None = None
    graph: DependencyGraph | None = None
    targets: list[Target] | None = None
    pattern: Pattern | None = None
    perturber: GroupPerturber | MaskPerturber | None = None
    #: Removable blocks (granularity ``"layer"``): the units, every removable block (those excluded too),
    #: and the units' influences (the proxy).
    blocks: list[Block] | None = None
    all_blocks: list[Block] | None = None
    influence: list[float] | None = None

    @property
    def structural(self) -> bool:
        return self.groups is not None or self.blocks is not None

    @property
    def fixed_amount(self) -> float | None:
        """The one amount an N:M pattern prunes, or 1 for blocks (dropped whole); None for other granularities."""
        if isinstance(self.pattern, NM):
            return 1 - self.pattern.n / self.pattern.m
        return 1.0 if self.blocks is not None else None

    def full(self, unit: int) -> int:
        """What ``unit`` keeps untouched: its channels or heads, itself (a block), or its nonzero weights now."""
        if self.blocks is not None:
            return 1
        if self.groups is not None:
            return self.groups[unit].size
        assert self.targets is not None
        return int(torch.count_nonzero(self.targets[unit].param.detach()))


def unit_space(model: nn.Module, example_inputs: Any, granularity: str, *, method: str | Criterion | None = None,
               units: str | Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> UnitSpace:
    """The units of ``granularity`` (see the module docstring), restricted to those ``units`` names (globs or
    ``re:`` patterns, by unit or module name) and to those ``exclude`` leaves free (modules kept whole, for
    groups; parameters or modules left alone, for masks). With a
    data-aware ``method`` only the parameters it prunes count (the layers inside the repeated blocks)."""
    if granularity == "layer":
        return _block_space(model, example_inputs, units, exclude)
    if granularity in GROUP_GRANULARITIES:
        if example_inputs is None:
            raise PruningError(f"granularity={granularity!r} traces the model: pass example_inputs=...")
        perturber = GroupPerturber(model, example_inputs, granularity)
        free = {g.cls for g in perturber.graph.groups(granularity, exclude)}  # type: ignore[arg-type]
        named = {name: g for name, g in perturber.groups.items() if g.cls in free}
        named = _chosen(named, units, lambda g: g.modules)
        return UnitSpace(granularity, list(named), groups=list(named.values()), graph=perturber.graph, perturber=perturber)
    pattern = parse_pattern(granularity)
    perturber = MaskPerturber(model, pattern, _data_skip(model, method))
    targets = _chosen(_not_excluded(perturber.targets, exclude), units, lambda t: [t.module_name])
    return UnitSpace(granularity, list(targets), targets=list(targets.values()), pattern=pattern, perturber=perturber)


def _block_space(model: nn.Module, example_inputs: Any, units: str | Iterable[str] | None,
                 exclude: Iterable[str] | None) -> UnitSpace:
    """Removable residual blocks, those ``exclude`` names left alone, narrowed to those ``units`` names."""
    if example_inputs is None:
        raise PruningError("granularity='layer' traces the model: pass example_inputs=...")
    perturber = DepthPerturber(model, example_inputs)
    every = list(perturber.blocks.values())
    named = _chosen({b.name: b for b in not_excluded(every, exclude)}, units, lambda b: [b.name])
    chosen = list(named.values())
    return UnitSpace("layer", list(named), blocks=chosen, all_blocks=every,
                     influence=block_influences(model, example_inputs, chosen))


def _not_excluded(targets: dict[str, Target], exclude: Iterable[str] | None) -> dict[str, Target]:
    """The parameters no ``exclude`` pattern names (by parameter or module name, as ``prune`` reads them)."""
    matchers = [name_matcher(p) for p in exclude or ()]
    return {n: t for n, t in targets.items() if not any(m(n) or m(t.module_name) for m in matchers)}


def _data_skip(model: nn.Module, method: str | Criterion | None) -> Callable[[Target], str | None] | None:
    """For a data-aware method: why it leaves a parameter alone (outside the blocks, or its own reason)."""
    if not (isinstance(method, str) and method in available_methods()):
        return None
    stack, chosen = block_stack(model), get_method(method)

    def reason(target: Target) -> str | None:
        if stack.index_of(target.module_name) is None:
            return "outside the repeated blocks"
        return chosen.skip_reason(target)

    return reason


def _chosen(named: dict[str, Any], patterns: str | Iterable[str] | None, modules: Callable[[Any], list[str]]) -> dict[str, Any]:
    """The units a list of patterns names (by unit or module name); every pattern must name one."""
    if not named:
        raise PruningError("no unit is left to allocate: every one is excluded; exclude fewer modules")
    if patterns is None:
        return named
    wanted = [patterns] if isinstance(patterns, str) else list(patterns)
    matchers = [(p, name_matcher(p)) for p in wanted]
    chosen, used = {}, set()
    for name, item in named.items():
        hits = {p for p, matches in matchers if any(matches(n) for n in (name, *modules(item)))}
        used |= hits
        if hits:
            chosen[name] = item
    unused = [p for p in wanted if p not in used]
    if unused:
        raise SelectionError(f"units pattern(s) {unused} match no unit; units look like: {', '.join(list(named)[:4])}")
    return chosen


# ---- what a unit keeps at an amount -----------------------------------------------------------------


def kept_counts(space: UnitSpace, unit: int, amounts: Sequence[float], round_to: int | None = None,
                criterion: Criterion | None = None) -> list[int]:
    """What ``unit`` keeps at each of ``amounts``: channels or heads (as ``shrink`` plans them), or nonzero
    weights (as ``prune`` with absolute amounts leaves them), or whether a block is kept (1) or dropped (0)."""
    if space.blocks is not None:
        return [1 if a == 0 else 0 for a in amounts]
    if space.groups is not None:
        group = space.groups[unit]
        scores = {group.cls: torch.zeros(group.size)}
        plans = [plan_keep([group], scores, a, round_to=round_to) if a > 0 else {} for a in amounts]
        return [len(p[group.cls]) if group.cls in p else group.size for p in plans]
    assert space.targets is not None and space.pattern is not None
    target, nonzero = space.targets[unit], space.full(unit)
    if isinstance(space.pattern, Unstructured):
        numel = target.param.numel()
        return [nonzero if a == 0 else min(nonzero, numel - amount_count(a, numel)) for a in amounts]
    return [nonzero if a == 0 else int(torch.count_nonzero(_planned(space, target, a, criterion)[1])) for a in amounts]


def _planned(space: UnitSpace, target: Target, amount: float,
             criterion: Criterion | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The keep mask ``prune`` would plan for ``target`` alone, and the weights it leaves nonzero."""
    assert space.pattern is not None
    chosen = criterion or get_criterion("magnitude")
    _, keep = plan_masks([target], chosen, space.pattern, None if isinstance(space.pattern, NM) else amount)[target.name]
    return keep, keep & (target.param.detach() != 0)


def proxy_drops(space: UnitSpace, unit: int, amounts: Sequence[float], counts: Sequence[int],
                criterion: Criterion) -> list[float]:
    """The proxy (see the module docstring) at each amount: the squared share of the unit's scores removed, or a
    block's influence once dropped."""
    if space.influence is not None:
        return [0.0 if kept else space.influence[unit] for kept in counts]
    if space.groups is not None:
        assert isinstance(space.perturber, GroupPerturber)
        if not space.perturber.scores:
            space.perturber.prepare(criterion)
        scores = space.perturber.scores[space.groups[unit].cls].double()
        return _squared(_lowest_share(scores, [space.groups[unit].size - kept for kept in counts]))
    assert space.targets is not None and space.pattern is not None
    target = space.targets[unit]
    scores = criterion.score(target.param.detach(), target).double().abs()
    if isinstance(space.pattern, Unstructured):
        return _squared(_lowest_share(scores.flatten(), [target.param.numel() - kept for kept in counts]))
    total = float(scores.sum()) or 1.0
    shares = []
    for amount in amounts:
        keep = _planned(space, target, amount, criterion)[0] if amount > 0 else None
        shares.append(0.0 if keep is None else float(scores[~keep].sum()) / total)
    return _squared(shares)


def _squared(shares: list[float]) -> list[float]:
    return [share * share for share in shares]


def _lowest_share(scores: torch.Tensor, removed: Sequence[int]) -> list[float]:
    """For each count ``k``, the sum of the ``k`` lowest scores over the sum of all."""
    ordered = torch.sort(scores.flatten().double()).values
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ordered, 0)])
    total = float(cumulative[-1]) or 1.0
    return [float(cumulative[max(0, min(k, len(ordered)))]) / total for k in removed]
