"""Pruning to a target: per-layer amounts that reach a budget while losing the least.

    from secateurs.analysis import allocate, sensitivity
    plan = allocate(model, x, "macs=0.5", granularity="channel", curves=sensitivity(model, metric, ...))
    secateurs.shrink(model, x, 0.0, per_layer=plan.per_layer)          # or prune(...), prune_with_data(...)

    plan = allocate(model, x, "latency=0.7", granularity="layer")      # whole residual blocks dropped
    secateurs.shrink(model, x, 0, granularity="layer", per_layer=plan.per_layer, exclude=plan.exclude)

Where the predicted drops come from (``source``):

* ``"sensitivity"``: a scan's curves (``curves=``, or scanned now with ``metric=``): each unit's measured drop
  at each scanned amount, in the metric's points; the drops of several units are taken to add up;
* ``"proxy"``: data free, no forward pass: the squared share of each unit's importance (criterion scores)
  removed (:mod:`secateurs.analysis.unit_space`); for whole blocks, their influence on ``example_inputs``
  (one forward pass, :mod:`secateurs.analysis.block_units`);
* ``"uniform"``: every unit the same amount, the smallest that meets the budget: the baseline (not for
  blocks, which are kept or dropped).

Costs (:mod:`secateurs.analysis.costs`, and :mod:`secateurs.analysis.latency_table` for latency) are computed
for every unit at every amount; :mod:`secateurs.analysis.greedy` chooses. With ``verify`` (default) the
allocation is then applied to a copy and the ratio measured (params, MACs and bytes counted; latency timed
against the dense model, interleaved); when it misses the budget (rounding, MACs no weight carries, a
latency the table mispredicted) the budget aimed at is scaled by ``target / achieved`` and the search run
again, up to :data:`FIXUPS` times, and the allocation says so.

Latency is measured, so its closed loop must survive noise (a loaded machine spreads per-round ratios by
10-15%). Each measurement is the median of :data:`LATENCY_ROUNDS` per-round ratios; a try fits when that
median is at least ``budget x (1 - LATENCY_TOLERANCE)`` and the median plus half its spread (about the upper
quartile) at most ``budget x (1 + LATENCY_TOLERANCE)``. A miss is corrected towards the budget less half
the measured spread (so that a noisier machine aims lower), the try that misses least is kept, and it is
measured once more in a fresh comparison: that final figure is what the allocation reports, with the one it
was chosen on in its notes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from secateurs.analysis.block_units import (
    block_cost_model,
    block_costs,
    shrink_arguments,
)
from secateurs.analysis.costs import CostModel, group_cost_model, mask_cost_model
from secateurs.analysis.greedy import Levels, search, uniform
from secateurs.analysis.latency_table import (
    LatencyTable,
    block_latencies,
    latency_cost_model,
    latency_table,
    shrunk_copy,
)
from secateurs.analysis.metrics import SAMPLE_NOTE, Metric, MetricFunction
from secateurs.analysis.result import SensitivityResult, exact_pattern
from secateurs.analysis.sensitivity import DEFAULT_AMOUNTS, sensitivity
from secateurs.analysis.targets import Target, UnreachableTargetError, parse_target
from secateurs.analysis.unit_space import (
    UnitSpace,
    kept_counts,
    proxy_drops,
    unit_space,
)
from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from secateurs.core.engine import prune
from secateurs.core.summary import count_params
from secateurs.data import available_methods
from secateurs.data.calibration import CalibrationSource
from secateurs.errors import PruningError
from secateurs.measure import compare_latency, count_nonzero, mac_counts, size_on_disk
from secateurs.structural import shrink
from secateurs.structural.depth import Block

SOURCES = ("sensitivity", "proxy", "uniform")
#: Amounts the proxy chooses among (a scan's curves bring their own).
PROXY_AMOUNTS = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: Amounts the uniform baseline tries, finest first found.
UNIFORM_AMOUNTS = tuple(round(0.01 * i, 2) for i in range(100))
#: Searches run again at most this many times when the measured ratio misses the budget.
FIXUPS = 3
#: How far the measured ratio may fall from the budget, relative to it: above (over budget) and below.
OVER, UNDER = 0.005, 0.02
#: Latency is measured, not counted: within this relative distance either way.
LATENCY_TOLERANCE = 0.05
#: Seconds of timed calls per model when an allocation's latency is measured against the dense model's...
LATENCY_BUDGET_S = 2.0
#: ... spread over this many rounds at least (one call per round for slow models): a median of 31 per-round
#: ratios is within about 2% of the true ratio where single rounds spread 10%.
LATENCY_ROUNDS = 31


@dataclass
class Allocation:
    """Per-unit amounts that reach a target; ``per_layer`` is what ``prune``, ``prune_with_data`` and
    ``shrink`` take (every unit named, untouched ones at 0.0), ``include`` the units an N:M pattern prunes.
    Whole blocks (granularity ``"layer"``): ``amounts`` is 1.0 for each block dropped, ``exclude`` the blocks
    kept and ``per_layer`` each container's count dropped, for ``shrink(model, x, 0, granularity="layer",
    per_layer=..., exclude=...)``."""

    target: Target
    granularity: str
    source: str
    cost: str
    amounts: dict[str, float]
    per_layer: dict[str, float | int]
    include: list[str] | None
    #: Cost over dense (for sparsity: the share of the units' weights left) as the cost model predicts it, and
    #: as measured on a copy (None without ``verify``); ``to_dict`` and ``summary`` give them in the target's terms.
    predicted: float
    achieved: float | None = None
    #: Predicted drop: metric points (sensitivity) or the summed squared shares of importance removed (proxy).
    predicted_drop: float | None = None
    drop_unit: str = ""
    fixups: int = 0
    #: The dense-against-allocated latency comparison (latency targets), as ``LatencyComparison.to_dict``.
    latency: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    exclude: list[str] | None = None

    @property
    def met(self) -> bool | None:
        """Whether the measured ratio meets the budget (within the tolerance); None when not measured."""
        budget = self.target.budget
        if self.achieved is None or budget is None:
            return None
        return _within(self.cost, self.achieved, budget, under=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": str(self.target), "kind": self.target.kind, "ratio": self.target.ratio,
            "max_drop": self.target.max_drop, "granularity": self.granularity, "source": self.source,
            "cost": self.cost, "predicted": self.target.reading(self.predicted),
            "achieved": self.target.reading(self.achieved), "met": self.met,
            "predicted_drop": self.predicted_drop, "drop_unit": self.drop_unit, "fixups": self.fixups,
            "amounts": self.amounts, "per_layer": self.per_layer, "include": self.include, "exclude": self.exclude,
            "latency": self.latency, "notes": self.notes,
        }  # fmt: skip

    def summary(self) -> str:
        reading = self.target.reading
        what = "sparsity" if self.target.kind == "sparsity" else f"{self.cost} over dense"
        achieved = "not measured" if self.achieved is None else f"{reading(self.achieved):.3f} measured"
        drop = "" if self.predicted_drop is None else f", predicted drop {self.predicted_drop:.3g} {self.drop_unit}"
        touched = sum(amount > 0 for amount in self.amounts.values())
        return (f"allocation to {self.target} ({self.source}): {what} {reading(self.predicted):.3f} predicted, "
                f"{achieved}{drop}; {touched}/{len(self.amounts)} units pruned")

    def table(self) -> str:
        width = max([len(name) for name in self.amounts] + [4])
        lines = [f"{'unit':<{width}}  {'amount':>7}"]
        lines += [f"{name:<{width}}  {amount:>7.3g}" for name, amount in self.amounts.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join([self.summary(), self.table(), *self.notes])


def allocate(
    model: nn.Module,
    example_inputs: Any,
    target: str | Target | None = None,
    *,
    granularity: str = "unstructured",
    source: str | None = None,
    curves: SensitivityResult | None = None,
    metric: Metric | MetricFunction | None = None,
    method: str | Criterion | None = None,
    calibration: CalibrationSource | None = None,
    amounts: Sequence[float] | None = None,
    max_drop: float | None = None,
    units: str | Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    round_to: int | None = None,
    table: LatencyTable | None = None,
    threads: int = 1,
    verify: bool = True,
    progress: bool = True,
) -> Allocation:
    """Per-unit amounts of ``granularity`` that reach ``target`` (``"macs=0.5"``, a :class:`Target`) while losing
    the least (see the module docstring); ``max_drop`` (metric points) alone removes as much as it allows.

    ``source``: ``"sensitivity"`` (default when ``curves`` or ``metric`` is given: ``metric`` is scanned now at
    ``amounts``, default 0.1 ... 0.9, with ``method`` and ``calibration``), ``"proxy"`` (the default otherwise)
    or ``"uniform"``. ``method`` is the criterion or data-aware method the model will be pruned with (the
    proxy ranks by it; magnitude for data-aware ones, whose units are then the layers inside the blocks).
    ``units``/``exclude`` narrow the units; ``round_to`` rounds channel counts as ``shrink`` will. Latency
    targets read ``table`` (default: :func:`~secateurs.analysis.latency_table.latency_table`, measured once
    and cached) on ``threads`` threads. Bad requests raise before any scan or timing; the model is untouched.
    """
    goal = parse_target(target, max_drop=max_drop)
    chosen_source = _checked_source(source, curves, metric, goal, granularity)
    space = unit_space(model, example_inputs, granularity, method=method, units=units, exclude=exclude)
    costs = _cost_model(space, _cost_kind(goal, space), model, example_inputs, round_to, table, threads, progress)
    criterion = _proxy_criterion(method)
    if chosen_source == "sensitivity" and curves is None:
        _check_reachable(space, costs, goal, [0.0, *(amounts or DEFAULT_AMOUNTS)], round_to, criterion)
        whole = granularity == "layer"  # blocks are dropped whole: no amounts, no criterion
        curves = sensitivity(model, metric, granularity=granularity, amounts=None if whole else amounts,  # type: ignore[arg-type]
                             method=None if whole else method,
                             calibration=calibration, example_inputs=example_inputs, progress=progress,
                             units=[exact_pattern(name) for name in space.names] if units or exclude else None)
    if chosen_source == "uniform":
        return _uniform(space, costs, goal, model, example_inputs, round_to, criterion, threads, verify)
    levels = _levels(space, chosen_source, curves, amounts, round_to, criterion)
    _check_reachable(space, costs, goal, None, round_to, criterion, levels)
    result = _searched(space, costs, levels, goal, chosen_source, model, example_inputs, curves, criterion, threads, verify)
    if curves is not None:  # a scan on a sample of the metric's data says so in the allocation too
        result.notes[:0] = [note for note in curves.notes if SAMPLE_NOTE in note]
    return result


# ---- checks ------------------------------------------------------------------------------------------


def _checked_source(source: str | None, curves: SensitivityResult | None, metric: Any, goal: Target,
                    granularity: str) -> str:
    """The source to use, or an error naming what is missing, before any work."""
    if source is None:
        source = "sensitivity" if curves is not None or metric is not None else "proxy"
    if source not in SOURCES:
        raise PruningError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    if source == "sensitivity" and curves is None and metric is None:
        raise PruningError("source='sensitivity' reads a scan's curves: pass curves=sensitivity(...) or metric=...")
    if curves is not None and curves.granularity != granularity:
        raise PruningError(f"the curves were scanned at granularity {curves.granularity!r}, not {granularity!r}; "
                           "scan again or allocate at theirs")
    if goal.max_drop is not None and source != "sensitivity":
        raise PruningError(f"max_drop is in the metric's points, which only a scan measures: use source='sensitivity' "
                           f"with curves= or metric= (source={source!r} predicts no metric)")
    if source == "uniform" and goal.kind is None:
        raise PruningError("the uniform baseline needs a budget: give a target such as macs=0.5")
    if source == "uniform" and granularity == "layer":
        raise PruningError("whole blocks are kept or dropped, so no one amount fits them all; the baseline for "
                           "blocks is shrink(model, x, amount, granularity='layer'), or use source='proxy'")
    if goal.kind == "latency" and granularity not in ("channel", "head", "layer"):
        raise PruningError(
            "a latency target needs units removed for real (granularity 'channel', 'head' or 'layer', pruned with "
            "shrink): masks leave dense kernels as slow as before"
        )
    return source


def _cost_kind(goal: Target, space: UnitSpace) -> str:
    """What is counted: the target's kind (sparsity is params for shrink), or MACs (shrink) / params (masks)
    when only ``max_drop`` was given."""
    if goal.kind is None:
        return "macs" if space.structural else "params"
    return "params" if goal.kind == "sparsity" and space.structural else goal.kind


def _proxy_criterion(method: str | Criterion | None) -> Criterion:
    if isinstance(method, Criterion):
        return method
    if method is None or method in available_methods():
        return get_criterion(DEFAULT_CRITERION)
    return get_criterion(method)


def _cost_model(space: UnitSpace, kind: str, model: nn.Module, example_inputs: Any, round_to: int | None,
                table: LatencyTable | None, threads: int, progress: bool) -> CostModel:
    if not space.structural:
        assert space.targets is not None
        return mask_cost_model(kind, model, example_inputs, space.targets)
    if space.blocks is not None:
        return _block_cost_model(space.blocks, kind, model, example_inputs, table, threads)
    assert space.graph is not None and space.groups is not None
    if kind != "latency":
        return group_cost_model(kind, model, example_inputs, space.graph, space.groups)
    if table is None:
        table = latency_table(model, example_inputs, granularity=space.granularity, graph=space.graph,
                              groups=space.groups, round_to=round_to, threads=threads, progress=progress)
    elif table.threads != threads:
        raise PruningError(f"the latency table was measured on {table.threads} thread(s), not threads={threads}")
    return latency_cost_model(table, space.graph, space.groups)


def _block_cost_model(blocks: list[Block], kind: str, model: nn.Module, example_inputs: Any,
                      table: LatencyTable | None, threads: int) -> CostModel:
    if kind != "latency":
        return block_cost_model(kind, *block_costs(kind, model, example_inputs, blocks), blocks)
    if table is not None:
        raise PruningError("a latency table times channel widths; whole blocks are timed by allocate itself: drop table=")
    model_ms, block_ms = block_latencies(model, example_inputs, [b.name for b in blocks], threads=threads)
    return block_cost_model(kind, model_ms, _fitted(model_ms, block_ms), blocks)


def _fitted(model_ms: float, block_ms: list[float]) -> list[float]:
    """Blocks timed alone, scaled down where together they would take longer than the whole model."""
    total = sum(block_ms)
    return [ms * min(1.0, model_ms / total) if total else ms for ms in block_ms]


def _check_reachable(space: UnitSpace, costs: CostModel, goal: Target, grid: Sequence[float] | None,
                     round_to: int | None, criterion: Criterion, levels: Levels | None = None) -> None:
    """Refuse a budget that even the largest amounts cannot reach (before a scan when ``grid`` is given)."""
    if goal.budget is None:
        return
    if space.blocks is not None:  # every block dropped that can be: each container keeps one
        dropped = Levels([[0.0, 1.0]] * len(space.names), [[1, 0]] * len(space.names), [[0.0, 0.0]] * len(space.names))
        most = dropped.counts(search(costs, dropped, 0.0))
    elif levels is not None:
        most = [kept[-1] for kept in levels.kept]
    else:
        top = [space.fixed_amount or max(grid or [0.0])]
        most = [kept_counts(space, u, top, round_to, criterion)[0] for u in range(len(space.names))]
    reachable = costs.ratio(most)
    if reachable > goal.budget * (1 + OVER):
        raise UnreachableTargetError(
            f"target {goal} cannot be reached: with every unit at its largest amount the model keeps "
            f"{reachable:.3f} of its dense {costs.kind}; allow larger amounts, more units (fewer excluded), or a "
            "looser target",
            reachable,
        )


# ---- levels ------------------------------------------------------------------------------------------


def _levels(space: UnitSpace, source: str, curves: SensitivityResult | None, amounts: Sequence[float] | None,
            round_to: int | None, criterion: Criterion) -> Levels:
    """Each unit's amounts, what it keeps at each, and the predicted drop (curves or the proxy)."""
    if source == "sensitivity":
        assert curves is not None
        return _curve_levels(space, curves, round_to)
    grid = [0.0, space.fixed_amount] if space.fixed_amount is not None else [0.0, *(amounts or PROXY_AMOUNTS)]
    grid = sorted({float(a) for a in grid})
    counts = [kept_counts(space, u, grid, round_to, criterion) for u in range(len(space.names))]
    drops = [proxy_drops(space, u, grid, counts[u], criterion) for u in range(len(space.names))]
    return Levels([list(grid) for _ in space.names], counts, drops)


def _curve_levels(space: UnitSpace, curves: SensitivityResult, round_to: int | None) -> Levels:
    unknown = [name for name in curves.units if name not in space.names]
    if unknown:
        raise PruningError(f"curves hold units {unknown[:4]} that this model has not (at this granularity, with "
                           f"these units/exclude); units look like {', '.join(space.names[:4])}")
    amounts, kept, drops = [], [], []
    for unit, name in enumerate(space.names):
        if name not in curves.units:
            amounts.append([0.0]), kept.append([space.full(unit)]), drops.append([0.0])
            continue
        curve = curves.curve(name)
        scanned = [(a, d, r) for a, d, r in zip(curve.amounts, curves.drops(name), curve.removed) if a > 0]
        grid = [0.0, *(a for a, _, _ in scanned)]
        amounts.append(grid)
        drops.append([0.0, *(d for _, d, _ in scanned)])
        if space.structural:
            kept.append(kept_counts(space, unit, grid, round_to))
        else:
            kept.append([space.full(unit), *(space.full(unit) - r for _, _, r in scanned)])
    return Levels(amounts, kept, drops)


# ---- choosing, measuring, fixing up ------------------------------------------------------------------


def _searched(space: UnitSpace, costs: CostModel, levels: Levels, goal: Target, source: str, model: nn.Module,
              example_inputs: Any, curves: SensitivityResult | None, criterion: Criterion, threads: int,
              verify: bool) -> Allocation:
    """Search, measure on a copy, and search again aiming at a corrected budget while the ratio misses."""
    budget, aim = goal.budget, goal.budget
    tries: list[tuple[Allocation, list[int]]] = []
    for attempt in range(FIXUPS + 1 if verify and budget is not None else 1):
        if aim is None:
            chosen = search(costs, levels, None, goal.max_drop)
        else:  # the budget comes first; a drop beyond max_drop is reported, not traded for missing it
            chosen = search(costs, levels, aim * costs.dense)
        amounts = {name: levels.amounts[u][level] for u, (name, level) in enumerate(zip(space.names, chosen))}
        found = _allocation(space, goal, source, costs, amounts, costs.ratio(levels.counts(chosen)))
        found.predicted_drop = levels.drop(chosen)
        found.drop_unit = curves.label if curves is not None else _proxy_label(space)
        found.fixups = attempt
        if verify:
            _measure(found, space, model, example_inputs, levels.counts(chosen), criterion, threads)
        tries.append((found, levels.counts(chosen)))
        if not _worth_another(costs.kind, found, budget):
            break
        aim = aim * _goal(found, budget) / max(found.achieved, 1e-9)  # type: ignore[operator, arg-type]
    best, kept = _best([found for found, _ in tries], budget), {id(f): k for f, k in tries}
    _note_tries(best, [found for found, _ in tries])
    if verify and budget is not None and costs.kind == "latency":
        _final_check(best, space, model, example_inputs, kept[id(best)], criterion, threads)
    _note_outcome(best, goal)
    return best


def _final_check(best: Allocation, space: UnitSpace, model: nn.Module, example_inputs: Any, kept: Sequence[int],
                 criterion: Criterion, threads: int) -> None:
    """Measure the chosen latency once more, in a fresh comparison, and report that figure."""
    chosen_on = best.achieved
    _measure(best, space, model, example_inputs, kept, criterion, threads)
    best.notes.append(f"latency ratio {chosen_on:.3f} when chosen; {best.achieved:.3f} (spread "
                      f"{_latency_spread(best):.0%}) in a final comparison, the figure reported")


def _proxy_label(space: UnitSpace) -> str:
    if space.blocks is not None:
        return "(block influence on the example inputs, summed)"
    return "(squared shares of importance removed, summed)"


def _uniform(space: UnitSpace, costs: CostModel, goal: Target, model: nn.Module, example_inputs: Any,
             round_to: int | None, criterion: Criterion, threads: int, verify: bool) -> Allocation:
    grid = [0.0, space.fixed_amount] if space.fixed_amount is not None else list(UNIFORM_AMOUNTS)
    counts = [kept_counts(space, u, grid, round_to, criterion) for u in range(len(space.names))]
    assert goal.budget is not None
    index = uniform(costs, counts, goal.budget * costs.dense)
    if index is None:
        raise PruningError(f"target {goal} cannot be reached with one amount for every unit (at most {grid[-1]})")
    kept = [unit_counts[index] for unit_counts in counts]
    found = _allocation(space, goal, "uniform", costs, dict.fromkeys(space.names, grid[index]), costs.ratio(kept))
    if verify:
        _measure(found, space, model, example_inputs, kept, criterion, threads)
    return found


def _allocation(space: UnitSpace, goal: Target, source: str, costs: CostModel, amounts: dict[str, float],
                predicted: float) -> Allocation:
    if space.all_blocks is not None:
        per_blocks, exclude = shrink_arguments(space.all_blocks, [name for name, a in amounts.items() if a > 0])
        return Allocation(goal, space.granularity, source, costs.kind, amounts, dict(per_blocks), None, predicted,
                          exclude=exclude)
    if space.fixed_amount is not None:
        per_layer, include = {}, [exact_pattern(name) for name, a in amounts.items() if a > 0]
    else:
        per_layer, include = {exact_pattern(name): a for name, a in amounts.items()}, None
    return Allocation(goal, space.granularity, source, costs.kind, amounts, per_layer, include, predicted)


def _worth_another(kind: str, found: Allocation, budget: float | None) -> bool:
    """Whether to search again: the measured ratio misses the budget because the cost model mispredicted it
    (not because the amounts are too coarse to come closer, which another search would not change), or a
    measured latency does not fit (see the module docstring)."""
    if budget is None or found.achieved is None:
        return False
    if kind == "latency":
        return _latency_miss(found, budget) > 0
    return not _within(kind, found.achieved, budget) and abs(found.achieved - found.predicted) > OVER * budget


def _latency_spread(found: Allocation) -> float:
    """The relative spread (interquartile range over median) of the measured latency ratio."""
    return float(found.latency["ratios"]["allocated"]["spread"]) if found.latency else 0.0


def _latency_miss(found: Allocation, budget: float) -> float:
    """How far a measured latency falls outside what fits, relative to the budget (0: it fits)."""
    assert found.achieved is not None
    upper = found.achieved * (1 + _latency_spread(found) / 2)
    return max(budget * (1 - LATENCY_TOLERANCE) - found.achieved, upper - budget * (1 + LATENCY_TOLERANCE), 0.0) / budget


def _goal(found: Allocation, budget: float) -> float:
    """The ratio the next search corrects towards: the budget, less half the measured spread for latency."""
    if found.cost != "latency":
        return budget
    return budget * max(1 - LATENCY_TOLERANCE, 1 - _latency_spread(found) / 2)


def _within(kind: str, achieved: float, budget: float, under: float = UNDER) -> bool:
    if kind == "latency":
        return abs(achieved / budget - 1) <= LATENCY_TOLERANCE
    return budget * (1 - under) <= achieved <= budget * (1 + OVER)


def _best(tries: list[Allocation], budget: float | None) -> Allocation:
    """The try closest to the budget without going over it (latency: closest either way)."""
    if budget is None or tries[-1].achieved is None:
        return tries[-1]
    measured = [t for t in tries if t.achieved is not None]
    if tries[0].cost == "latency":
        return min(measured, key=lambda t: (_latency_miss(t, budget), abs(t.achieved / budget - 1)))  # type: ignore[operator]
    fitting = [t for t in measured if t.achieved <= budget * (1 + OVER)]  # type: ignore[operator]
    if fitting:
        return max(fitting, key=lambda t: t.achieved)  # type: ignore[arg-type,return-value]
    return min(measured, key=lambda t: t.achieved)  # type: ignore[arg-type,return-value]


def _note_tries(best: Allocation, tries: list[Allocation]) -> None:
    if len(tries) > 1:
        history = ", ".join(f"{t.achieved:.3f}" for t in tries)
        best.notes.append(f"measured {best.cost} ratios of the searches: {history}; kept the one at {best.achieved:.3f}")


def _note_outcome(best: Allocation, goal: Target) -> None:
    if goal.max_drop is not None and best.predicted_drop is not None and best.predicted_drop > goal.max_drop:
        best.notes.append(f"predicted drop {best.predicted_drop:.3g} exceeds max_drop {goal.max_drop:g}: the budget "
                          "costs more than allowed; loosen the target or the max drop")
    if best.met is False:
        best.notes.append(f"the measured {best.cost} ratio {best.achieved:.3f} misses the target {goal.budget:g}")


def _measure(found: Allocation, space: UnitSpace, model: nn.Module, example_inputs: Any, kept: Sequence[int],
             criterion: Criterion, threads: int) -> None:
    """Apply ``found`` to a copy of ``model`` and set ``found.achieved`` (and the latency comparison)."""
    if space.blocks is not None:
        twin = copy.deepcopy(model)
        if any(amount > 0 for amount in found.amounts.values()):
            shrink(twin, example_inputs, 0, granularity="layer", per_layer=found.per_layer, exclude=found.exclude,
                   verify=False)
    elif space.structural:
        assert space.graph is not None and space.groups is not None
        counts = {group.cls: count for group, count in zip(space.groups, kept)}
        twin = shrunk_copy(model, example_inputs, space.graph, space.groups, counts, space.granularity)
    else:
        twin = copy.deepcopy(model)
        options = {"include": found.include} if found.include is not None else {"per_layer": found.per_layer}
        if found.include != []:
            prune(twin, method=criterion, granularity=space.pattern, allow_noop=True, **options)  # type: ignore[arg-type]
    found.achieved, found.latency = _ratio(found.cost, space, model, twin, example_inputs, threads)


def _ratio(kind: str, space: UnitSpace, dense: nn.Module, pruned: nn.Module, example_inputs: Any,
           threads: int) -> tuple[float, dict[str, Any] | None]:
    """The measured cost of ``pruned`` over the dense model's (and the latency comparison, for latency)."""
    if kind == "latency":
        comparison = compare_latency({"dense": dense, "allocated": pruned}, example_inputs, threads=threads,
                                     budget_s=LATENCY_BUDGET_S, rounds=LATENCY_ROUNDS)
        return comparison.ratios["allocated"].median, comparison.to_dict()
    if kind == "params":
        counted = count_params if space.structural else count_nonzero
        return counted(pruned) / count_params(dense), None
    if kind == "macs":
        after = mac_counts(pruned, example_inputs)
        return (after.dense if space.structural else after.nonzero) / mac_counts(dense, example_inputs).dense, None
    if kind == "size":
        after_size = size_on_disk(pruned)
        return (after_size.dense_bytes if space.structural else after_size.sparse_bytes) / size_on_disk(dense).dense_bytes, None
    assert kind == "sparsity" and space.targets is not None
    names = set(space.names)
    params = [p for name, p in pruned.named_parameters() if name in names]
    total = sum(p.numel() for p in params)
    return sum(int((p != 0).sum()) for p in params) / total, None

