"""Which units of each group to keep: amounts, local or global ranking, per-layer ratios, rounding.

The result is ``{class: kept indices}`` for the groups that lose something. Nothing here touches the
model. Ties are broken by position (lower index kept first) so plans repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from secateurs.core.amounts import Amount, amount_count, check_amount, per_layer_amounts
from secateurs.errors import PruningError
from secateurs.structural.graph import Group

Scope = Literal["local", "global"]


def _names(group: Group) -> list[str]:
    """What a per-layer pattern may name a group by: the group, any member module or tensor."""
    return [group.name, *group.modules, *(m.tensor for m in group.members)]


def _keep_count(size: int, amount: Amount, min_keep: int, round_to: int | None) -> int:
    keep = max(size - amount_count(amount, size), min(min_keep, size))
    return _rounded(keep, size, round_to)


def _rounded(keep: int, size: int, round_to: int | None) -> int:
    if round_to and round_to > 1 and size >= round_to:
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
    return keep


def _top(scores: torch.Tensor, keep: int) -> np.ndarray:
    order = torch.sort(-scores, stable=True).indices[:keep]
    return np.sort(order.numpy())


def plan_keep(
    groups: list[Group],
    scores: Mapping[int, torch.Tensor],
    amount: Amount,
    *,
    scope: Scope = "local",
    per_layer: Mapping[str, Amount] | None = None,
    min_keep: int = 1,
    round_to: int | None = None,
) -> dict[int, np.ndarray]:
    """Kept indices per group class (groups that keep everything are left out)."""
    amount = check_amount(amount, whole=False)
    if scope not in ("local", "global"):
        raise PruningError(f"scope must be 'local' or 'global', got {scope!r}")
    if not isinstance(min_keep, int) or min_keep < 1:
        raise PruningError(f"min_keep must be an int >= 1 (a layer is never pruned to zero), got {min_keep!r}")
    if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
        raise PruningError(f"round_to must be a positive int such as 8 or 16, got {round_to!r}")
    names = {g.cls: _names(g) for g in groups}
    overrides = per_layer_amounts(per_layer, names, what="prunable group", whole=False)
    keep_counts: dict[int, int] = {}
    pooled = []
    for group in groups:
        rounding = round_to if group.kind == "channel" else None
        if group.cls in overrides or scope == "local":
            keep_counts[group.cls] = _keep_count(group.size, overrides.get(group.cls, amount), min_keep, rounding)
        else:
            pooled.append(group)
    if pooled:
        keep_counts.update(_global_counts(pooled, scores, amount, min_keep, round_to))
    keep = {}
    for group in groups:
        count = keep_counts[group.cls]
        if count < group.size:
            keep[group.cls] = _top(scores[group.cls], count)
    return keep


def _global_counts(groups: list[Group], scores: Mapping[int, torch.Tensor], amount: Amount, min_keep: int,
                   round_to: int | None) -> dict[int, int]:
    """Rank every unit of every group together. Scores are divided by their group's mean so groups of
    different sizes and member counts compete on equal terms."""
    to_remove = amount_count(amount, sum(g.size for g in groups))
    entries = []
    for g in groups:
        s = scores[g.cls]
        mean = float(s.mean())
        normalised = s / mean if mean > 0 else s
        entries.extend((float(v), i, g.cls) for i, v in enumerate(normalised))
    entries.sort(key=lambda e: (e[0], e[2], -e[1]))
    counts = {g.cls: g.size for g in groups}
    floor = {g.cls: min(min_keep, g.size) for g in groups}
    removed = 0
    for _, _, cls in entries:
        if removed >= to_remove:
            break
        if counts[cls] > floor[cls]:
            counts[cls] -= 1
            removed += 1
    sizes = {g.cls: g.size for g in groups}
    kinds = {g.cls: g.kind for g in groups}
    return {cls: _rounded(c, sizes[cls], round_to if kinds[cls] == "channel" else None) for cls, c in counts.items()}
