"""Importance of each unit of each group, from any registered criterion.

A member's contribution to unit ``i`` is ``criterion.reduce`` over the member's weights at that unit
(every position whose coordinate on the group's class is ``i``, across all other dimensions), using the
criterion's own elementwise ``score``. Members are then combined with ``aggregate`` (sum or mean).

A criterion that wants to see whole groups (activation- or gradient-based ones) can define
``score_group(group, graph) -> Tensor[group.size]``; it is then used instead of the member scores.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

import numpy as np
import torch

from secateurs.core.criteria import Criterion
from secateurs.core.targets import Target, io_dims
from secateurs.errors import PruningError
from secateurs.structural.graph import DependencyGraph, Group, Member

Aggregate = Literal["sum", "mean"]
#: Which members score a unit: ``"outputs"``, the weights that produce it (a filter, a neuron's row, the
#: q/k/v rows of a head), or ``"all"``, also the weights that read it (the next layer's input columns).
ScoredBy = Literal["outputs", "all"]


def _produces(graph: DependencyGraph, named: dict[str, torch.nn.Module], member: Member) -> bool:
    """Whether ``member`` is the output dimension of a weight (a row of a Linear, a filter of a Conv...)."""
    tensor = graph.tensors[member.tensor]
    return tensor.dim() >= 2 and member.dim == io_dims(named[member.module_name], tensor)[0]


def _target(graph: DependencyGraph, named: dict[str, torch.nn.Module], name: str) -> Target:
    holders = graph.holders[name]
    first = holders[0]
    aliases = tuple((h.module_name, named[h.module_name]) for h in holders[1:])
    return Target(first.module_name, first.attr, named[first.module_name], aliases)


def per_position(scores: torch.Tensor, dim: int, criterion: Criterion) -> torch.Tensor:
    """One score per position along ``dim``: the criterion's reduction over every other dimension."""
    if scores.dim() == 1:
        return scores
    flat = scores.movedim(dim, 0).reshape(scores.shape[dim], -1)
    return criterion.reduce(flat, (1,))


def member_scores(position_scores: torch.Tensor, member: Member, cls: int, size: int, criterion: Criterion) -> torch.Tensor:
    """One score per unit of class ``cls`` from a member's per-position scores.

    Positions are reduced first (over all other dimensions), then the positions of each unit together; for
    the norms, sums, means and maxima criteria use this equals one reduction over the whole slice.
    """
    coords = member.layout.coordinates(cls)
    positions = np.nonzero(coords >= 0)[0]
    order = positions[np.argsort(coords[positions], kind="stable")]
    picked = position_scores[torch.as_tensor(order, device=position_scores.device)].reshape(size, -1)
    return picked[:, 0] if picked.shape[1] == 1 else criterion.reduce(picked, (1,))


def score_groups(graph: DependencyGraph, groups: list[Group], criterion: Criterion,
                 aggregate: Aggregate = "sum", scored_by: ScoredBy = "outputs") -> dict[int, torch.Tensor]:
    """One score per unit for every group (higher = more important). Each parameter is scored once.

    ``scored_by="outputs"`` (default) scores a unit by the weights that produce it, as filter-norm pruning
    does; a group with no such weight (a stream fed only by embeddings) falls back to all its parameters.
    Summing the readers' columns too (``"all"``) lets a layer with few inputs and many readers be ranked by
    its readers alone, which removes channels whose small outgoing weights only compensate large outputs."""
    if aggregate not in ("sum", "mean"):
        raise PruningError(f"aggregate must be 'sum' or 'mean', got {aggregate!r}")
    if scored_by not in ("outputs", "all"):
        raise PruningError(f"scored_by must be 'outputs' or 'all', got {scored_by!r}")
    result: dict[int, torch.Tensor] = {}
    by_tensor: dict[str, list[tuple[Group, Member]]] = defaultdict(list)
    named = dict(graph.model.named_modules(remove_duplicate=False))
    for group in groups:
        if hasattr(criterion, "score_group"):
            result[group.cls] = _valid_group_scores(criterion.score_group(group, graph), group)
            continue
        members = [m for m in group.members if m.kind == "param" and graph.tensors[m.tensor].is_floating_point()]
        producers = [m for m in members if _produces(graph, named, m)]
        for member in producers if scored_by == "outputs" and producers else members:
            by_tensor[member.tensor].append((group, member))
    parts: dict[int, list[torch.Tensor]] = defaultdict(list)
    for name, entries in by_tensor.items():
        tensor = graph.tensors[name].detach()
        scores = criterion.score(tensor, _target(graph, named, name))
        if scores.shape != tensor.shape:
            raise PruningError(f"criterion {criterion!r} gave scores of shape {tuple(scores.shape)} for {name} {tuple(tensor.shape)}")
        by_dim: dict[int, torch.Tensor] = {}
        for group, member in entries:
            if member.dim not in by_dim:
                by_dim[member.dim] = per_position(scores, member.dim, criterion)
            parts[group.cls].append(member_scores(by_dim[member.dim], member, group.cls, group.size, criterion).float().cpu())
        del scores, by_dim
    for group in groups:
        if group.cls in result:
            continue
        stacked = torch.stack(parts[group.cls]) if parts[group.cls] else torch.zeros(1, group.size)
        total = stacked.sum(0) if aggregate == "sum" else stacked.mean(0)
        result[group.cls] = _valid_group_scores(total, group)
    return result


def _valid_group_scores(scores: torch.Tensor, group: Group) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach().float().cpu().reshape(-1)
    if scores.numel() != group.size:
        raise PruningError(f"scores for group {group.name} have {scores.numel()} entries, the group {group.size} units")
    if not torch.isfinite(scores).all():
        raise PruningError(f"scores for group {group.name} contain NaN/Inf; the criterion must give finite scores")
    return scores
