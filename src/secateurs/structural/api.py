"""``shrink``: trace, group, score, plan, cut, verify, all or nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from torch import nn

from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion, normalized_for_global
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.structural import hf
from secateurs.structural.depth import shrink_depth
from secateurs.structural.graph import DependencyGraph, Group, build_graph
from secateurs.structural.importance import Aggregate, ScoredBy, score_groups
from secateurs.structural.patchers import patch_modules
from secateurs.structural.persist import append_step, record_structure
from secateurs.structural.planning import Amount, Scope, check_amount, plan
from secateurs.structural.report import GroupChange, ShrinkReport
from secateurs.structural.surgery import Undo, kept_positions, slice_tensors
from secateurs.structural.verify import (
    count_params,
    failing_module,
    masked_outputs,
    max_abs_diff,
    run_outputs,
    tolerance,
)

Granularity = Literal["channel", "head", "layer"]


def _criterion(method: str | Criterion, seed: int | None, options: dict[str, Any]) -> Criterion:
    if seed is not None:
        options = {**options, "seed": seed}
    return get_criterion(method, **options)


def shrink(
    model: nn.Module,
    example_inputs: Any,
    amount: Amount = 0.5,
    *,
    granularity: Granularity = "channel",
    method: str | Criterion = DEFAULT_CRITERION,
    scope: Scope = "local",
    normalize_scores: bool = True,
    round_to: int | None = None,
    min_keep: int = 1,
    exclude: Iterable[str | nn.Module] | None = None,
    per_layer: Mapping[str, Amount] | None = None,
    aggregate: Aggregate = "sum",
    scored_by: ScoredBy | None = None,
    prune_normalized: bool = False,
    strict: bool = True,
    verify: bool = True,
    atol: float | None = None,
    seed: int | None = None,
    **criterion_options: Any,
) -> ShrinkReport:
    """Remove channels, heads or layers from ``model`` in place; return a :class:`ShrinkReport`.

    ``amount`` is the fraction (or int count) of each group's units to remove (``scope="local"``) or of all
    units ranked together (``"global"``). ``granularity``: ``"channel"`` (channels, neurons, head dims),
    ``"head"`` (attention heads) or ``"layer"`` (whole residual blocks). ``exclude`` names modules (globs)
    that keep every dimension; the model's outputs always keep theirs. ``round_to`` keeps channel counts
    multiples of it; ``min_keep`` is the least any group keeps. ``method`` is any registered criterion (with ``scope="global"``, ``normalize_scores`` makes scores relative to their
    layer's mean, as :func:`secateurs.prune` does);
    ``scored_by="outputs"`` scores a unit by the weights producing it (filters, rows), ``"all"`` adds the
    weights reading it (default: the criterion's ``scored_by``), and ``aggregate`` sums or averages them.
    ``prune_normalized`` also prunes dimensions that feed statistics (the hidden size under layer norms,
    head dims under the default attention scale); those statistics are then over the kept channels, and
    the reference for verification computes them the same way.

    The shrunk model's output is compared with the masked model's on ``example_inputs``; beyond
    ``atol`` (default: float rounding) the surgery is undone and an error raised. On any error the
    model is left exactly as it was.
    """
    start = time.perf_counter()
    amount = check_amount(amount)
    criterion = normalized_for_global(_criterion(method, seed, criterion_options), normalize_scores and scope == "global")
    label = method if isinstance(method, str) else repr(criterion)
    if granularity == "layer":
        return shrink_depth(model, example_inputs, amount, criterion=criterion, scope=scope, exclude=exclude,
                            per_layer=per_layer, aggregate=aggregate, strict=strict, verify=verify, atol=atol,
                            start=start, label=label)
    graph = build_graph(model, example_inputs, strict=strict)
    groups = graph.groups(granularity, exclude, prune_normalized)
    if not groups:
        what = "attention heads were found" if granularity == "head" and not graph.head_classes else "axis is free"
        raise PruningError(
            f"no prunable {granularity} groups in {type(model).__name__}: no {what} "
            "(see build_graph(model, x).why_frozen(name) for the reasons; prune_normalized=True frees dimensions "
            "that only feed layer norms), or try another granularity"
        )
    scores = score_groups(graph, groups, criterion, aggregate, scored_by or criterion.scored_by)  # type: ignore[arg-type]
    keep = plan(groups, scores, amount, scope=scope, per_layer=per_layer, min_keep=min_keep, round_to=round_to)
    report = apply_keep(model, example_inputs, graph, groups, keep, granularity=granularity,
                        method=label, scope=scope,
                        amount=amount, verify=verify, atol=atol, prune_normalized=prune_normalized)
    report.seconds = time.perf_counter() - start
    return report


def apply_keep(model: nn.Module, example_inputs: Any, graph: DependencyGraph, groups: list[Group],
               keep: dict, *, granularity: str, method: str, scope: str, amount: Amount, verify: bool = True,
               atol: float | None = None, prune_normalized: bool = False) -> ShrinkReport:
    """Cut the planned units out of ``model``, verify, and report; rolled back on any failure."""
    params_before, macs_before = count_params(model), graph.macs
    positions = {}
    if verify:
        positions = {name: kept_positions(graph, name, keep) for name in graph.layouts}
        positions = {n: p for n, p in positions.items() if any(x is not None for x in p)}
    reference = masked_outputs(graph, example_inputs, keep, positions, prune_normalized) if verify else None
    undo = Undo()
    try:
        changed = slice_tensors(graph, keep, undo)
        attrs = patch_modules(graph, keep, changed, undo)
        for name in changed:
            for holder in graph.holders[name]:
                attrs.setdefault(holder.module_name, {})
        config, warnings = hf.update_config(model, undo)
        warnings = list(graph.warnings) + warnings
        with failing_module(model) as path:
            try:
                outputs, macs_after = run_outputs(model, example_inputs)
            except Exception as exc:
                where = path[-1] if path else "<model>"
                raise UnsupportedOperationError(
                    f"the shrunk model fails in module {where!r} ({type(exc).__name__}: {exc}); its code reads a size "
                    "secateurs does not update. Register a patcher for it (secateurs.structural.register_patcher) "
                    "or keep it whole with exclude=[...]. The model was restored."
                ) from exc
        diff = tol = None
        if reference is not None:
            diff, tol = max_abs_diff(reference, outputs), tolerance(reference, atol)
            if not diff <= tol:
                raise PruningError(
                    f"verification failed: the shrunk model differs from the masked model by {diff:.3g} "
                    f"(tolerance {tol:.3g}); the model was restored. Please report this model."
                )
        structure = record_structure(model, attrs, config)
    except BaseException:
        undo.rollback()
        raise
    sizes = {cls: len(k) for cls, k in keep.items()}
    report = ShrinkReport(
        granularity=granularity, method=method, scope=scope, amount=amount,
        params_before=params_before, params_after=count_params(model),
        macs_before=macs_before, macs_after=macs_after,
        max_abs_diff=diff, tolerance=tol,
        groups=[GroupChange(g.name, g.kind, g.size, sizes.get(g.cls, g.size), len(g.members)) for g in groups],
        patched_modules=sorted(attrs), warnings=warnings, structure=structure,
    )
    append_step(model, structure)
    return report

