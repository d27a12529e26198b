"""Sensitivity analysis: prune one unit at a time at a range of amounts, evaluate, keep the curves.

    import secateurs as sc
    from secateurs.analysis import sensitivity, proxy_metric

    result = sensitivity(model, lambda m: accuracy(m, test), granularity="unstructured")
    result = sensitivity(model, proxy_metric(model, "notes.txt"), granularity="head", example_inputs=x)
    result.most_sensitive(3); result.to_json("sens.json"); result.plot("sens.png")

Units (see :mod:`secateurs.analysis.units`): each prunable parameter for mask patterns (``"unstructured"``,
``"2:4"``, ``"in"``...), each coupled channel group for ``"channel"``, each attention block's heads for
``"head"``, each removable residual block for ``"layer"``. Every perturbation is undone exactly before the
next, so the model ends as it began. The dense metric is evaluated once; amounts that remove nothing from a
unit (a fraction rounding to zero channels) or the same as the amount before are not evaluated again.
Where the metric reads fixed inputs and the model is a stack of blocks, evaluations skip the blocks before
the perturbed one (:mod:`secateurs.analysis.reuse`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from secateurs.analysis.metrics import Metric, MetricFunction, as_metric
from secateurs.analysis.result import SensitivityResult, UnitCurve
from secateurs.analysis.reuse import Evaluator, ReusingEvaluator, evaluator
from secateurs.analysis.units import (
    DepthPerturber,
    GroupPerturber,
    MaskPerturber,
    Perturber,
    PruneOne,
    Unit,
)
from secateurs.core.amounts import check_amount
from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion
from secateurs.core.engine import prune_targets
from secateurs.core.patterns import NM, Pattern, parse_pattern
from secateurs.core.selection import name_matcher
from secateurs.core.summary import count_params
from secateurs.core.targets import Target
from secateurs.data import (
    BlockRequest,
    Calibration,
    available_methods,
    load_calibration,
    unit_criterion,
)
from secateurs.data.calibration import CalibrationSource
from secateurs.data.gradients import LossFn
from secateurs.data.measuring import dense_evidence
from secateurs.data.methods import Needs, get_method
from secateurs.data.statistics import gather_input_statistics
from secateurs.errors import PruningError, SelectionError
from secateurs.runtime import inference, model_device

DEFAULT_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Granularities whose units are found in the dependency graph (they need example inputs to trace).
STRUCTURAL_GRANULARITIES = ("channel", "head", "layer")


def sensitivity(
    model: nn.Module,
    metric: Metric | MetricFunction,
    *,
    granularity: str = "unstructured",
    amounts: Sequence[float] | None = None,
    method: str | Criterion | None = None,
    calibration: CalibrationSource | None = None,
    example_inputs: Any = None,
    units: str | Iterable[str] | None = None,
    loss_fn: LossFn | None = None,
    reuse_activations: bool | None = None,
    progress: bool = True,
    **criterion_options: Any,
) -> SensitivityResult:
    """Prune each unit of ``model`` alone at each amount, evaluate ``metric``, and return the curves.

    ``metric``: a :class:`~secateurs.analysis.Metric` (``parse_metric``, ``proxy_metric``...) or a function
    ``model -> float``, higher is better. ``granularity``: ``"unstructured"``, ``"N:M"`` (e.g. ``"2:4"``), another
    mask pattern (``"in"``), ``"channel"``, ``"head"`` or ``"layer"``. ``amounts``: fractions of each unit
    (default 0.1 to 0.9; below 1 for channels and heads); N:M and layers fix their own, so leave them out there.
    ``method``: a criterion name or object (default magnitude; ``criterion_options`` go to it) or a data-aware
    method (``wanda``, ``sparsegpt``, ``taylor``, ``activation``; needs ``calibration``, and ``loss_fn`` for
    Taylor on masks). Data-aware evidence is measured once on the dense model, which is exact here: every
    other unit is dense while one is pruned. ``example_inputs`` trace the model for channels, heads and
    layers. ``units``: globs (or ``re:`` patterns) naming the units to scan (default all). ``reuse_activations``:
    ``None`` reuses where it applies, ``False`` never, ``True`` insists. ``progress``: a progress bar with an
    estimate of the time left. Bad requests raise before any evaluation; the model ends exactly as it began.
    """
    started = time.perf_counter()
    metric = as_metric(metric)
    scanned = _checked_amounts(granularity, amounts)
    _check_method(granularity, method, calibration)
    perturber = _perturber(model, granularity, method, example_inputs)
    chosen = _chosen(perturber.units, units)
    perturber.prepare(_how(model, perturber, chosen, method, granularity, calibration, loss_fn, criterion_options))
    with inference(model):
        runner = evaluator(model, metric, reuse_activations)
        dense = runner.dense()
        curves, evaluations = _scan(perturber, runner, chosen, scanned, dense, progress)
    return SensitivityResult(
        metric=metric.name, higher_is_better=metric.higher_is_better, unit=metric.unit, granularity=granularity,
        method=_method_name(granularity, method), dense=dense, amounts=scanned, curves=curves,
        model_params=count_params(model), evaluations=evaluations + 1, seconds=time.perf_counter() - started,
        notes=[*metric.sample_notes(), *_notes(runner)],
    )  # fmt: skip


def _checked_amounts(granularity: str, amounts: Sequence[float] | None) -> list[float]:
    """The amounts to scan, sorted, or a :class:`PruningError` before anything runs."""
    if not isinstance(granularity, str):
        raise PruningError(f"granularity must be a string such as 'unstructured', '2:4' or 'channel', got {granularity!r}")
    fixed = 1.0 if granularity == "layer" else _nm_sparsity(granularity)
    if fixed is not None:
        if amounts is not None:
            raise PruningError(f"granularity={granularity!r} prunes a fixed amount ({fixed:g}) of each unit; drop amounts")
        return [fixed]
    chosen = DEFAULT_AMOUNTS if amounts is None else amounts
    if isinstance(chosen, (str, bytes)) or not isinstance(chosen, Iterable) or not list(chosen):
        raise PruningError(f"amounts must be a non-empty sequence of fractions such as (0.25, 0.5), got {amounts!r}")
    whole = granularity not in STRUCTURAL_GRANULARITIES
    checked = [check_amount(a, "each of amounts", whole=whole) for a in chosen]
    if any(isinstance(a, int) for a in checked):
        raise PruningError("amounts are fractions of each unit (0.5), not counts: units differ in size")
    return sorted(set(checked))


def _nm_sparsity(granularity: str) -> float | None:
    if granularity in STRUCTURAL_GRANULARITIES:
        return None
    try:
        pattern = parse_pattern(granularity)
    except PruningError as exc:
        raise PruningError(f"granularity={granularity!r} is not 'channel', 'head', 'layer' or a mask pattern ({exc})") from None
    return 1 - pattern.n / pattern.m if isinstance(pattern, NM) else None


def _is_data_method(method: object) -> bool:
    return isinstance(method, str) and method in available_methods()


def _check_method(granularity: str, method: str | Criterion | None, calibration: CalibrationSource | None) -> None:
    if granularity == "layer" and method is not None:
        raise PruningError("granularity='layer' removes whole blocks, so no criterion ranks inside them; drop method")
    if _is_data_method(method):
        if calibration is None:
            raise PruningError(f"method={method!r} reads calibration data: pass calibration=... (a text file, 'english', tensors...)")
        chosen = get_method(method)  # type: ignore[arg-type]
        if granularity not in STRUCTURAL_GRANULARITIES:
            chosen.resolve_scope(parse_pattern(granularity), None)
        elif not chosen.ranks_units:
            raise PruningError(f"{method} prunes weights inside rows and ranks no {granularity}s; use wanda, taylor or activation")
    elif method is not None and not isinstance(method, Criterion):
        get_criterion(method)


def _perturber(model: nn.Module, granularity: str, method: str | Criterion | None, example_inputs: Any) -> Perturber:
    if granularity in STRUCTURAL_GRANULARITIES:
        if example_inputs is None:
            raise PruningError(f"granularity={granularity!r} traces the model: pass example_inputs=...")
        if granularity == "layer":
            return DepthPerturber(model, example_inputs)
        return GroupPerturber(model, example_inputs, granularity)
    skip = get_method(method).skip_reason if _is_data_method(method) else None  # type: ignore[arg-type]
    return MaskPerturber(model, parse_pattern(granularity), skip)


def _chosen(all_units: list[Unit], patterns: str | Iterable[str] | None) -> list[Unit]:
    """The units the patterns name (by unit name or module), in model order; every pattern must name one."""
    if patterns is None:
        return list(all_units)
    wanted = [patterns] if isinstance(patterns, str) else list(patterns)
    matchers = [(p, name_matcher(p)) for p in wanted]
    chosen, used = [], set()
    for unit in all_units:
        hits = {p for p, matches in matchers if any(matches(n) for n in (unit.name, *unit.modules))}
        used |= hits
        if hits:
            chosen.append(unit)
    unused = [p for p in wanted if p not in used]
    if unused:
        names = ", ".join(u.name for u in all_units[:4])
        raise SelectionError(f"units pattern(s) {unused} match no unit; units look like: {names}")
    return chosen


def _how(model: nn.Module, perturber: Perturber, chosen: list[Unit], method: str | Criterion | None,
         granularity: str, calibration: CalibrationSource | None, loss_fn: LossFn | None,
         options: dict[str, Any]) -> Any:
    """What prepares the perturber: a criterion for groups, a one-target pruning function for masks."""
    if isinstance(perturber, DepthPerturber):
        return None
    if isinstance(perturber, GroupPerturber):
        if _is_data_method(method):
            return unit_criterion(model, calibration, method, granularity=granularity)  # type: ignore[arg-type]
        return get_criterion(method or DEFAULT_CRITERION, **options)
    assert isinstance(perturber, MaskPerturber)
    targets = [perturber.targets[unit.name] for unit in chosen]
    return _mask_pruner(model, perturber.pattern, targets, method, calibration, loss_fn, options)


def _mask_pruner(model: nn.Module, pattern: Pattern, targets: list[Target], method: str | Criterion | None,
                 calibration: CalibrationSource | None, loss_fn: LossFn | None, options: dict[str, Any]) -> PruneOne:
    """Prunes one target alone: with a criterion, or with a data-aware method whose evidence is measured now,
    once, on the dense model (for the scanned layers only: Hessians of every layer of a large model do not fit)."""
    if not _is_data_method(method):
        criterion = get_criterion(method or DEFAULT_CRITERION, **options)
        return lambda target, amount: prune_targets(
            [target], amount, method=criterion, granularity=pattern, allow_noop=True  # small amounts may round to none
        ).layers[0]
    chosen = get_method(method)  # type: ignore[arg-type]
    request = BlockRequest(pattern, chosen.resolve_scope(pattern, None))
    loaded = load_calibration(calibration, model)
    data = Calibration([batch.to(model_device(model)) for batch in loaded], loaded.description)
    if chosen.needs.reads_inputs:
        modules = [target.module for target in targets]
        evidence = gather_input_statistics(model, data, modules, gram=chosen.needs is Needs.HESSIAN)
    else:
        evidence = dense_evidence(chosen.needs, model, data, [target.param for target in targets], loss_fn)
    return lambda target, amount: chosen.prune_block([target], evidence, amount, request)[0]


def _scan(perturber: Perturber, runner: Evaluator, units: list[Unit], amounts: list[float], dense: float,
          progress: bool) -> tuple[list[UnitCurve], int]:
    """Every unit at every amount, in the runner's order; curves in model order and the evaluations made."""
    curves: dict[str, UnitCurve] = {}
    evaluations = 0
    bar = tqdm(total=len(units) * len(amounts), desc="sensitivity", unit="eval", disable=not progress)
    with bar:
        for unit in runner.order(units):
            runner.prepare(unit)
            curve = curves[unit.name] = UnitCurve(unit.name, unit.kind, unit.size, unit.params)
            seen = {0: dense}  # metric by number of elements removed: equal removals, equal models
            for amount in amounts:
                bar.set_postfix_str(f"{unit.name} @ {amount:g}", refresh=False)
                with perturber.applied(unit, amount) as change:
                    if change.removed not in seen:
                        seen[change.removed] = runner(unit)
                        evaluations += 1
                curve.add(amount, seen[change.removed], change.removed, change.params_removed)
                bar.update()
    return [curves[unit.name] for unit in units], evaluations


def _method_name(granularity: str, method: str | Criterion | None) -> str:
    if granularity == "layer":
        return "removal"
    if method is None:
        return DEFAULT_CRITERION
    return method if isinstance(method, str) else (getattr(method, "name", "") or repr(method))


def _notes(runner: Evaluator) -> list[str]:
    notes = list(runner.notes)
    if isinstance(runner, ReusingEvaluator) and runner.active and runner.level:
        notes.append(f"activations reused: evaluations ran from the perturbed block on ({len(runner.blocks)} blocks)")
    return notes

