"""Model in, plan, masks, model out.

:func:`plan_masks` decides the new keep-mask of every target without touching the model;
:func:`apply_plan` writes them; :func:`prune` is both, after selecting targets and checking every
parameter, so a bad request raises before anything changes.

Amounts (see :mod:`secateurs.core.amounts`): a float is a fraction, an int a count, of weights
(unstructured) or of groups (rows, channels). In ``"absolute"`` mode (the default) the amount is the sparsity to reach: asking for 0.5
after 0.3 ends at 50%. In ``"relative"`` mode it is a fraction of what is still kept, as in
``torch.nn.utils.prune``. Already-pruned weights stay pruned; a target already sparser than asked is left as it is.

Scopes: ``"local"`` ranks each tensor on its own, ``"global"`` ranks all selected tensors together
(bounded memory, see :mod:`secateurs.core.ranking`), ``"row"`` ranks each output row on its own so every
row keeps the same fraction (the comparison group of Wanda); with a block pattern, each row of tiles (output
band) keeps the same fraction of its tiles.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from secateurs.core.amounts import Amount, amount_count, check_amount, nothing_pruned, per_layer_amounts
from secateurs.core.criteria import DEFAULT_CRITERION, Criterion, get_criterion, normalized_for_global
from secateurs.core.masks import MASK_SUFFIX, get_mask, set_mask
from secateurs.core.patterns import NM, Block, Pattern, Structured, Unstructured, parse_pattern
from secateurs.core.ranking import StreamedScores, TensorScores, prune_lowest
from secateurs.core.selection import ModuleType, Selection, Skipped, select
from secateurs.core.targets import Target
from secateurs.errors import NothingPrunedError, PruningError, SelectionError

_COUNT_CHUNK = 1 << 20
Scope = Literal["local", "global", "row"]
Mode = Literal["absolute", "relative"]


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, ...]
    groups: int
    groups_pruned: int
    params: int
    zeros_before: int
    zeros_after: int

    @property
    def sparsity(self) -> float:
        return self.zeros_after / self.params if self.params else 0.0


@dataclass
class PruneReport:
    """What one pruning call did: per-layer results, what was skipped, and totals over the pruned layers."""

    method: str
    granularity: str
    scope: str
    mode: str
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros_after for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "granularity": self.granularity,
            "scope": self.scope,
            "mode": self.mode,
            "params": self.params,
            "zeros": self.zeros,
            "sparsity": self.sparsity,
            "layers": [{**asdict(layer), "sparsity": layer.sparsity} for layer in self.layers],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'params':>10}  {'sparsity':>8}  {'groups pruned':>15}"]
        for layer in self.layers:
            groups = f"{layer.groups_pruned}/{layer.groups}"
            lines.append(f"{layer.name:<{width}}  {layer.params:>10,}  {layer.sparsity:>8.1%}  {groups:>15}")
        lines.append(f"{'total':<{width}}  {self.params:>10,}  {self.sparsity:>8.1%}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}: {_grouped_by_reason(self.skipped)}")
        return "\n".join(lines)


def _grouped_by_reason(skipped: Sequence[Skipped]) -> str:
    """Every skipped name, once, grouped under its reason (the output layer must always be visible)."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        by_reason.setdefault(item.reason, []).append(item.name)
    return "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())


def _count(amount: Amount, total: int, name: str) -> int:
    count = amount_count(amount, total)
    if count > total:
        raise PruningError(f"cannot prune {count} of the {total} prunable units of {name}; use a smaller amount")
    return count


def _new_prunes(amount: Amount, groups: int, kept: int, mode: Mode, name: str) -> int:
    """How many more groups to prune, given how many exist and how many are still kept."""
    if mode == "relative":
        return _count(amount, kept, name)
    return max(0, _count(amount, groups, name) - (groups - kept))


def validate_target(target: Target) -> None:
    """Refuse parameters that cannot be pruned meaningfully, saying what to do instead."""
    param = target.param
    if not isinstance(param, torch.Tensor):
        raise PruningError(f"{target.name} is not a tensor")
    if param.is_meta:
        raise PruningError(
            f"{target.name} is on the meta device and holds no data; load real weights "
            "(e.g. model.to_empty(device=...) then load_state_dict) before pruning"
        )
    if param.is_quantized or not param.is_floating_point():
        raise PruningError(
            f"{target.name} has dtype {param.dtype}; only floating-point parameters can be pruned. "
            "Prune before quantizing, or exclude it"
        )
    if param.layout != torch.strided:
        raise PruningError(f"{target.name} has layout {param.layout}; convert it to a dense tensor before pruning")
    check_finite(target.name, param)
    for _, module in target.holders:
        buffer = target.param_name + MASK_SUFFIX
        if get_mask(module, target.param_name) is None and hasattr(module, buffer):
            raise PruningError(
                f"{type(module).__name__} holding {target.name} already has an attribute {buffer!r}; "
                "rename it before pruning (secateurs keeps its mask there)"
            )


def check_finite(name: str, values: torch.Tensor) -> None:
    """Refuse weights holding NaN/Inf: every criterion's scores of them would be meaningless."""
    if values.is_floating_point() and not _all_finite(values.detach()):
        bad = int(values.numel() - torch.count_nonzero(torch.isfinite(values.detach())))
        raise PruningError(
            f"{name} holds {bad} NaN/Inf values; the model is broken before pruning: fix or reload its weights"
        )


def _all_finite(values: torch.Tensor) -> bool:
    """One cheap reduction; the elementwise check (a full-size temporary) only when the sum is not finite."""
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def count_zeros(values: torch.Tensor) -> int:
    """Exact zeros, chunk by chunk: ``count_nonzero`` of a float tensor with scattered zeros is
    several times slower than of a bool one, and a whole-tensor comparison is a full-size temporary."""
    flat = values.detach().reshape(-1)
    return flat.numel() - sum(int(torch.count_nonzero(flat[i : i + _COUNT_CHUNK] != 0)) for i in range(0, flat.numel(), _COUNT_CHUNK))


def _checked(scores: torch.Tensor, target: Target) -> torch.Tensor:
    if not _all_finite(scores):
        raise PruningError(f"scores for {target.name} contain NaN/Inf; the criterion must give finite scores")
    return scores


def _current_keep(target: Target) -> torch.Tensor:
    mask = get_mask(target.module, target.param_name)
    param = target.param
    return torch.ones(param.shape, dtype=torch.bool, device=param.device) if mask is None else mask.clone()


def _local_keep(target: Target, criterion: Criterion, pattern: Pattern, amount: Amount | None, mode: Mode) -> tuple[torch.Tensor, int]:
    keep = _current_keep(target)
    param = target.param.detach()
    if isinstance(pattern, NM):
        scores = _checked(criterion.score(param, target), target)
        return pattern.keep_mask(scores, keep, target), 0
    group_keep = pattern.group_keep(keep, target).clone()
    assert amount is not None
    k = _new_prunes(amount, group_keep.numel(), int(torch.count_nonzero(group_keep)), mode, target.name)
    if k:
        scores = _checked(pattern.group_scores(criterion.score(param, target), target, criterion), target)
        flat = group_keep.view(-1)
        prune_lowest([TensorScores(scores)], [flat], k)
    return pattern.expand(group_keep, keep, target), k


def _row_keep(
    target: Target, criterion: Criterion, pattern: Pattern, amount: Amount, mode: Mode
) -> tuple[torch.Tensor, int]:
    """Every output row keeps the same fraction of its groups: its weights, or for a block pattern the tiles
    of its row of tiles (so no output band loses all its tiles). Ties pruned by position (stable sort)."""
    keep = _current_keep(target)
    param = target.param.detach()
    if isinstance(pattern, Block):
        tiles_keep = pattern.group_keep(keep, target)
        def tile_scores() -> torch.Tensor:
            return pattern.group_scores(criterion.score(param, target), target, criterion)

        new_tiles, count = _prune_each_row(tiles_keep, tile_scores, amount, mode, target)
        return pattern.expand(new_tiles, keep, target), count
    out_dim = target.dim("out")
    rows_keep = keep.movedim(out_dim, 0).reshape(keep.shape[out_dim], -1)

    def row_scores() -> torch.Tensor:
        return criterion.score(param, target).movedim(out_dim, 0).reshape(rows_keep.shape)

    new_rows, count = _prune_each_row(rows_keep, row_scores, amount, mode, target)
    moved_shape = keep.movedim(out_dim, 0).shape
    return new_rows.reshape(moved_shape).movedim(0, out_dim).contiguous(), count


def _prune_each_row(
    rows_keep: torch.Tensor, row_scores: Callable[[], torch.Tensor], amount: Amount, mode: Mode, target: Target
) -> tuple[torch.Tensor, int]:
    """``rows_keep`` ``[rows, groups]`` with the same share of each row's groups pruned, lowest scores first."""
    width = rows_keep.shape[1]
    kept = torch.count_nonzero(rows_keep, dim=1)
    if mode == "relative":
        counts = [_count(amount, int(c), target.name) for c in kept.tolist()]
        per_row = torch.tensor(counts, device=rows_keep.device)
    else:
        per_row = (_count(amount, width, target.name) - (width - kept)).clamp(min=0)
    if not int(per_row.sum()):
        return rows_keep, 0
    scores = _checked(row_scores(), target).masked_fill(~rows_keep, float("inf"))
    return rows_keep & ~_lowest_in_each_row(scores, per_row), int(per_row.sum())


def _lowest_in_each_row(scores: torch.Tensor, per_row: torch.Tensor) -> torch.Tensor:
    """The ``per_row[r]`` lowest scores of each row, equal scores taken by position (as a stable sort
    would). A selection, not a sort of whole rows: the last score taken sets a threshold, and only the
    ties at the threshold are counted off from the left."""
    k = int(per_row.max())
    lowest = torch.topk(scores, k, dim=1, largest=False, sorted=False).values
    if bool((per_row == k).all()):
        threshold = lowest.amax(dim=1, keepdim=True)
    else:  # rows take different counts: each needs its own rank among the lowest
        threshold = lowest.sort(dim=1).values.gather(1, (per_row - 1).clamp(min=0).unsqueeze(1))
    below = scores < threshold
    tied = scores == threshold
    ties_taken = per_row - torch.count_nonzero(below, dim=1)
    if bool((torch.count_nonzero(tied, dim=1) > ties_taken).any()):  # more ties than places: leftmost first
        tied &= tied.cumsum(dim=1, dtype=torch.int32) <= ties_taken.to(torch.int32).unsqueeze(1)
    return below | tied


def _checked_request(
    pattern: Pattern, amount: Amount | None, scope: Scope, mode: Mode, per_layer: Mapping[str, Amount] | None
) -> Amount | None:
    """The checked amount, after refusing combinations of pattern, amount, scope and mode that cannot work."""
    if scope not in ("local", "global", "row"):
        raise PruningError(f"scope must be 'local', 'global' or 'row', got {scope!r}")
    if mode not in ("absolute", "relative"):
        raise PruningError(f"mode must be 'absolute' or 'relative', got {mode!r}")
    if isinstance(pattern, NM):
        if amount is not None or per_layer:
            raise PruningError(
                f"an N:M pattern fixes the sparsity at 1 - {pattern.n}/{pattern.m}; drop the amount "
                "(and per-layer amounts)"
            )
        if scope == "global":
            raise PruningError("N:M is decided within each block of M weights; use scope='local'")
    elif amount is None and not per_layer:
        raise PruningError("give an amount (float fraction or int count) to prune")
    if scope == "row" and not isinstance(pattern, (Unstructured, Block)):
        raise PruningError(
            "scope='row' ranks within each output row (its weights, or its row of tiles for a block pattern); "
            "it needs granularity='unstructured' or 'block:R[xC]'"
        )
    if scope == "global" and not pattern.supports_global:
        raise PruningError(f"{pattern!r} cannot rank across tensors; use scope='local'")
    return None if amount is None else check_amount(amount)


def plan_masks(
    targets: Sequence[Target],
    criterion: Criterion,
    pattern: Pattern,
    amount: Amount | None,
    scope: Scope = "local",
    mode: Mode = "absolute",
    per_layer: Mapping[str, Amount] | None = None,
) -> dict[str, tuple[Target, torch.Tensor]]:
    """The new keep-mask of every target, keyed by name. Reads the model, never writes it."""
    amount = _checked_request(pattern, amount, scope, mode, per_layer)
    for target in targets:
        pattern.validate(target)

    names = {t.name: (t.name, t.module_name) for t in targets}
    overrides = per_layer_amounts(per_layer, names, what="selected parameter")
    missing = [t.name for t in targets if t.name not in overrides and amount is None and not isinstance(pattern, NM)]
    if missing:
        raise PruningError(f"no amount for {missing[:5]}: give amount= or a per-layer pattern covering them")

    plan: dict[str, tuple[Target, torch.Tensor]] = {}
    pooled = [t for t in targets if t.name not in overrides] if scope == "global" else []
    pooled_names = {t.name for t in pooled}
    for target in targets:
        if target.name in pooled_names:
            continue
        layer_amount = overrides.get(target.name, amount)
        if scope == "row":
            keep, _ = _row_keep(target, criterion, pattern, layer_amount, mode)  # type: ignore[arg-type]
        else:
            keep, _ = _local_keep(target, criterion, pattern, layer_amount, mode)
        plan[target.name] = (target, keep)
    if pooled:
        plan.update(_global_keep(pooled, criterion, pattern, amount, mode))  # type: ignore[arg-type]
    return {t.name: plan[t.name] for t in targets}


def _global_keep(
    targets: Sequence[Target], criterion: Criterion, pattern: Pattern, amount: Amount, mode: Mode
) -> dict[str, tuple[Target, torch.Tensor]]:
    keeps = [_current_keep(t) for t in targets]
    group_keeps = [keep if isinstance(pattern, Unstructured) else pattern.group_keep(keep, t).clone() for t, keep in zip(targets, keeps)]
    groups = sum(g.numel() for g in group_keeps)
    kept = sum(int(torch.count_nonzero(g)) for g in group_keeps)
    k = _new_prunes(amount, groups, kept, mode, "the selected parameters")
    if k:
        sources = []
        for target in targets:
            param = target.param.detach()
            if isinstance(pattern, Unstructured) and criterion.pointwise:
                sources.append(StreamedScores(param, criterion.score_values))
            else:
                def compute(target: Target = target, param: torch.Tensor = param) -> torch.Tensor:
                    return _checked(pattern.group_scores(criterion.score(param, target), target, criterion), target)

                sources.append(TensorScores(compute, numel=pattern.num_groups(target)))
        prune_lowest(sources, [g.view(-1) for g in group_keeps], k)
    result = {}
    for target, keep, group_keep in zip(targets, keeps, group_keeps):
        result[target.name] = (target, keep if group_keep is keep else pattern.expand(group_keep, keep, target))
    return result


def apply_plan(plan: Mapping[str, tuple[Target, torch.Tensor]]) -> None:
    """Write planned masks to the model (every holder of a tied parameter gets the same mask)."""
    for target, keep in plan.values():
        for _, module in target.holders:
            set_mask(module, target.param_name, keep)


def _groups_pruned(pattern: Pattern, target: Target, keep: torch.Tensor) -> tuple[int, int]:
    if isinstance(pattern, (Unstructured, NM)):
        return keep.numel(), keep.numel() - int(torch.count_nonzero(keep))
    group_keep = pattern.group_keep(keep, target)
    return group_keep.numel(), group_keep.numel() - int(torch.count_nonzero(group_keep))


def prune_targets(
    targets: Sequence[Target],
    amount: Amount | None = None,
    *,
    method: str | Criterion = DEFAULT_CRITERION,
    granularity: str | Pattern = "unstructured",
    scope: Scope = "local",
    mode: Mode = "absolute",
    per_layer: Mapping[str, Amount] | None = None,
    normalize_scores: bool = True,
    skipped: Iterable[Skipped] = (),
    allow_noop: bool = False,
    **criterion_options: Any,
) -> PruneReport:
    """Prune given targets: validate all, plan all, then write. The model is unchanged on any error.

    A plan that masks no new weight raises :class:`~secateurs.errors.NothingPrunedError` (naming the smallest
    amount that acts) unless ``allow_noop``: schedules that may ask for what is already reached pass it."""
    pattern_obj = parse_pattern(granularity)
    criterion = get_criterion(method, **criterion_options)
    global_structured = scope == "global" and isinstance(pattern_obj, Structured)
    criterion = normalized_for_global(criterion, normalize_scores and global_structured)
    for target in targets:
        validate_target(target)
    zeros_before = {t.name: count_zeros(t.param) for t in targets}
    plan = plan_masks(targets, criterion, pattern_obj, amount, scope, mode, per_layer)
    if not allow_noop and not _newly_masked(plan):
        raise _nothing_pruned(targets, pattern_obj, amount, scope)
    apply_plan(plan)
    report = PruneReport(
        method=getattr(criterion, "name", "") or type(criterion).__name__,
        granularity=repr(pattern_obj),
        scope=scope,
        mode=mode,
        skipped=list(skipped),
    )
    for target, keep in plan.values():
        groups, pruned = _groups_pruned(pattern_obj, target, keep)
        param = target.param.detach()
        report.layers.append(
            LayerReport(
                name=target.name,
                shape=tuple(param.shape),
                groups=groups,
                groups_pruned=pruned,
                params=param.numel(),
                zeros_before=zeros_before[target.name],
                zeros_after=count_zeros(param),
            )
        )
    return report


def _newly_masked(plan: Mapping[str, tuple[Target, torch.Tensor]]) -> int:
    """How many weights the plan masks that are not masked yet."""
    newly = 0
    for target, keep in plan.values():
        old = get_mask(target.module, target.param_name)
        old_kept = keep.numel() if old is None else int(torch.count_nonzero(old))
        newly += old_kept - int(torch.count_nonzero(keep))
    return newly


def _nothing_pruned(targets: Sequence[Target], pattern: Pattern, amount: Amount | None, scope: Scope) -> PruningError:
    """Why a plan masks nothing, with the smallest amount that would act."""
    if scope == "row" and isinstance(pattern, Block):
        sizes = [pattern.num_groups(t) // (t.param.shape[t.dim("out")] // pattern.rows) for t in targets]
    elif scope == "row":
        sizes = [t.param.numel() // max(t.param.shape[t.dim("out")], 1) for t in targets]
    else:
        sizes = [pattern.num_groups(t) for t in targets]
    largest = sum(sizes) if scope == "global" else max(sizes, default=0)
    masked = sum(t.param.numel() - int(torch.count_nonzero(_current_keep(t))) for t in targets)
    total = sum(t.param.numel() for t in targets)
    unit = "weight" if isinstance(pattern, (Unstructured, NM)) else "unit"
    if isinstance(pattern, NM):
        return NothingPrunedError(
            f"nothing to prune: every selected layer already satisfies {pattern!r}; pass allow_noop=True to accept a no-op"
        )
    return nothing_pruned(amount, unit, largest, already=masked / total if total else None)


def _fitting(selection: Selection, pattern: Pattern) -> tuple[list[Target], list[Skipped]]:
    """The selected targets that ``pattern`` can prune; the others join the skipped ones, with the reason."""
    targets, skipped = list(selection.targets), list(selection.skipped)
    if not isinstance(pattern, (NM, Structured, Block)):
        return targets, skipped
    usable = []
    for target in targets:
        try:
            pattern.validate(target)
            usable.append(target)
        except PruningError as exc:
            skipped.append(Skipped(target.name, str(exc)))
    if not usable:
        raise SelectionError(f"no selected parameter fits {pattern!r}: " + "; ".join(s.reason for s in skipped[-3:]))
    return usable, skipped


def prune(
    model: nn.Module,
    amount: Amount | None = None,
    *,
    method: str | Criterion = DEFAULT_CRITERION,
    granularity: str | Pattern = "unstructured",
    scope: Scope = "local",
    mode: Mode = "absolute",
    normalize_scores: bool = True,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[ModuleType] | None = None,
    param_names: Sequence[str] = ("weight",),
    per_layer: Mapping[str, Amount] | None = None,
    include_output: bool = False,
    include_frozen: bool = False,
    seed: int | None = None,
    allow_noop: bool = False,
    **criterion_options: Any,
) -> PruneReport:
    """Prune ``model`` in place with masks and return a report.

    ``method`` names a criterion (``"magnitude"``, ``"l2"``, ``"random"``, ...) or is a
    :class:`~secateurs.core.criteria.Criterion`; ``granularity`` is ``"unstructured"``, ``"channel"``/``"out"``,
    ``"in"``, ``"structured:DIM"``, ``"N:M"`` or ``"block:32"``/``"block:16x32"`` (tiles); ``seed`` seeds random criteria. With ``scope="global"`` and a
    structured granularity, ``normalize_scores`` (default) divides each unit's score by its layer's mean unit
    score before ranking, so layers of different fan-in compete fairly; ``False`` ranks raw scores. See the module
    docstring for amounts, modes and scopes, and :func:`secateurs.core.selection.select` for selection.
    A request that masks nothing new is an error unless ``allow_noop=True``.
    """
    selection: Selection = select(
        model,
        include=include,
        exclude=exclude,
        types=types,
        param_names=param_names,
        include_output=include_output,
        include_frozen=include_frozen,
    )
    if seed is not None:
        criterion_options["seed"] = seed
    pattern_obj = parse_pattern(granularity)
    targets, skipped = _fitting(selection, pattern_obj)
    return prune_targets(
        targets,
        amount,
        method=method,
        granularity=pattern_obj,
        scope=scope,
        mode=mode,
        per_layer=per_layer,
        normalize_scores=normalize_scores,
        skipped=skipped,
        allow_noop=allow_noop,
        **criterion_options,
    )
