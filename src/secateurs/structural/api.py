"""``shrink``: trace, group, score, plan, cut, verify, all or nothing."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any, Literal

from torch import nn

from secateurs.core.amounts import Amount, check_amount, nothing_pruned
from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion, normalized_for_global
from secateurs.core.engine import check_finite
from secateurs.core.summary import count_params
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.structural import hf
from secateurs.structural.depth import shrink_depth
from secateurs.structural.graph import DependencyGraph, Group, build_graph
from secateurs.structural.importance import Aggregate, ScoredBy, score_groups
from secateurs.structural.patchers import patch_modules
from secateurs.structural.persist import append_step, record_structure
from secateurs.structural.planning import Scope, plan_keep
from secateurs.structural.report import GroupChange, ShrinkReport, Verification
from secateurs.structural.surgery import Undo, kept_positions, slice_tensors
from secateurs.structural.verify import ActivationProbe, cut_points, masked_outputs, run_shrunk

Granularity = Literal["channel", "head", "layer"]


def _make_criterion(method: str | Criterion, seed: int | None, options: dict[str, Any], normalize: bool) -> Criterion:
    if seed is not None:
        options = {**options, "seed": seed}
    return normalized_for_global(get_criterion(method, **options), normalize)


def _prunable_groups(graph: DependencyGraph, granularity: str, exclude: Iterable[str | nn.Module] | None,
                     prune_normalized: bool) -> list[Group]:
    groups = graph.groups(granularity, exclude, prune_normalized)
    if not groups:
        what = "attention heads were found" if granularity == "head" and not graph.head_classes else "axis is free"
        raise PruningError(
            f"no prunable {granularity} groups in {type(graph.model).__name__}: no {what}{_frozen_examples(graph)}; "
            "prune_normalized=True frees dimensions that only feed layer norms, or try another granularity"
        )
    return groups


def _frozen_examples(graph: DependencyGraph, count: int = 2) -> str:
    """Why the output dimension of the first weights keeps its size, as a clause of an error message."""
    reasons = []
    for name in [n for n in graph.layouts if n.endswith("weight")][:count]:
        why = graph.why_frozen(name).get(0) or []
        if why:
            reasons.append(f"{name} dim 0 is fixed by: {why[0]}")
    return " (" + "; ".join(reasons) + ")" if reasons else ""


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
    aggregate: Aggregate | None = None,
    scored_by: ScoredBy | None = None,
    prune_normalized: bool = False,
    strict: bool = True,
    verify: bool = True,
    atol: float | None = None,
    seed: int | None = None,
    allow_noop: bool = False,
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
    weights reading it (default: the criterion's ``scored_by``), and ``aggregate`` (``"sum"`` or ``"mean"``) combines
    them (default ``None``: the criterion's ``aggregate``, ``"sum"`` for weight criteria; block influence
    averages, so a block is ranked by exactly its influence).
    ``prune_normalized`` also prunes dimensions that feed statistics (the hidden size under layer norms,
    head dims under the default attention scale); those statistics are then over the kept channels, and
    the reference for verification computes them the same way.

    The shrunk model is compared with the masked model on ``example_inputs``, at the outputs and at the
    output of every layer holding a cut tensor, each relative to its own values; beyond float rounding
    (or the absolute ``atol``) the surgery is undone and an error raised. ``report.verified`` is False,
    with the reason, when every compared value vanishes (random-init outputs). On any error the
    model is left exactly as it was. A plan that removes no unit raises
    :class:`~secateurs.errors.NothingPrunedError` naming the smallest amount that acts, unless ``allow_noop``.
    """
    start = time.perf_counter()
    amount = check_amount(amount, whole=False)
    for name, param in model.named_parameters():
        check_finite(name, param)
    criterion = _make_criterion(method, seed, criterion_options, normalize_scores and scope == "global")
    label = method if isinstance(method, str) else repr(criterion)
    aggregate = aggregate or criterion.aggregate  # type: ignore[assignment]
    if granularity == "layer":
        return shrink_depth(model, example_inputs, amount, criterion=criterion, scope=scope, exclude=exclude,
                            per_layer=per_layer, aggregate=aggregate, strict=strict, verify=verify, atol=atol,
                            start=start, label=label, allow_noop=allow_noop)
    graph = build_graph(model, example_inputs, strict=strict)
    groups = _prunable_groups(graph, granularity, exclude, prune_normalized)
    scores = score_groups(graph, groups, criterion, aggregate, scored_by or criterion.scored_by)  # type: ignore[arg-type]
    keep = plan_keep(groups, scores, amount, scope=scope, per_layer=per_layer, min_keep=min_keep, round_to=round_to)
    if not keep and not allow_noop:
        sizes = [g.size for g in groups]
        raise nothing_pruned(amount, granularity, sum(sizes) if scope == "global" else max(sizes))
    report = apply_keep(model, example_inputs, graph, groups, keep, granularity=granularity, method=label, scope=scope,
                        amount=amount, verify=verify, atol=atol, prune_normalized=prune_normalized)
    report.seconds = time.perf_counter() - start
    return report


def apply_keep(model: nn.Module, example_inputs: Any, graph: DependencyGraph, groups: list[Group],
               keep: dict, *, granularity: str, method: str, scope: str, amount: Amount, verify: bool = True,
               atol: float | None = None, prune_normalized: bool = False) -> ShrinkReport:
    """Cut the planned units out of ``model``, verify, and report; rolled back on any failure."""
    params_before, macs_before = count_params(model), graph.macs
    probe, reference = _reference(graph, example_inputs, keep, prune_normalized, atol) if verify else (None, [])
    undo = Undo()
    try:
        attrs, config, warnings = _cut_units(model, graph, keep, undo)
        outputs, macs_after = run_shrunk(model, example_inputs, _unpatched, probe)
        check = probe.conclude(reference, outputs, "the shrunk model differs from the masked model") if probe else Verification()
        structure = record_structure(model, attrs, config)
    except BaseException:
        undo.rollback()
        raise
    sizes = {cls: len(k) for cls, k in keep.items()}
    report = ShrinkReport(
        granularity=granularity, method=method, scope=scope, amount=amount,
        params_before=params_before, params_after=count_params(model),
        macs_before=macs_before, macs_after=macs_after,
        **asdict(check),
        groups=[GroupChange(g.name, g.kind, g.size, sizes.get(g.cls, g.size), len(g.members)) for g in groups],
        patched_modules=sorted(attrs), warnings=list(graph.warnings) + warnings, structure=structure,
    )
    append_step(model, structure)
    return report


def _reference(graph: DependencyGraph, example_inputs: Any, keep: dict, prune_normalized: bool,
               atol: float | None) -> tuple[ActivationProbe, list]:
    """What the shrunk model must reproduce: the masked model's outputs, and its activations at every layer
    holding a cut tensor (kept by the probe)."""
    positions = {name: kept_positions(graph, name, keep) for name in graph.layouts}
    positions = {n: p for n, p in positions.items() if any(x is not None for x in p)}
    probe = cut_points(graph, keep, positions, atol)
    return probe, masked_outputs(graph, example_inputs, keep, positions, prune_normalized, probe.recording())


def _cut_units(model: nn.Module, graph: DependencyGraph, keep: dict,
         undo: Undo) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]:
    """Slice the tensors, patch the modules and the Hugging Face config: (module attributes, config, warnings)."""
    changed = slice_tensors(graph, keep, undo)
    attrs = patch_modules(graph, keep, changed, undo)
    for name in changed:
        for holder in graph.holders[name]:
            attrs.setdefault(holder.module_name, {})
    config, warnings = hf.update_config(model, undo)
    return attrs, config, warnings


def _unpatched(where: str, exc: Exception) -> Exception:
    return UnsupportedOperationError(
        f"the shrunk model fails in module {where!r} ({type(exc).__name__}: {exc}); its code reads a size "
        "secateurs does not update. Register a patcher for it (secateurs.structural.register_patcher) "
        "or keep it whole with exclude=[...]. The model was restored."
    )
