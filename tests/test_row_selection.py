"""Row-wise pruning picks the lowest scores of each row by selection; it must pick exactly what a stable
sort of each row did, ties included (earlier positions first), whatever the per-row counts."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secateurs.core.amounts import amount_count
from secateurs.core.engine import _prune_each_row
from secateurs.core.targets import Target


def stable_sort_selection(rows_keep: torch.Tensor, scores: torch.Tensor, per_row: torch.Tensor) -> torch.Tensor:
    """The reference: sort each row stably (pruned entries last) and drop its first ``per_row`` entries."""
    order = torch.sort(scores.masked_fill(~rows_keep, float("inf")), dim=1, stable=True).indices
    drop = torch.arange(rows_keep.shape[1]).unsqueeze(0) < per_row.unsqueeze(1)
    new_rows = rows_keep.clone()
    new_rows.scatter_(1, order, ~drop & rows_keep.gather(1, order))
    return new_rows


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 6),
    width=st.integers(1, 24),
    levels=st.integers(1, 4),  # few distinct scores: ties everywhere
    pruned_before=st.floats(0.0, 0.9),
    mode=st.sampled_from(["relative", "absolute"]),
    amount=st.one_of(st.floats(0.0, 1.0), st.integers(0, 24)),
)
def test_selection_equals_the_stable_sort(
    seed: int, rows: int, width: int, levels: int, pruned_before: float, mode: str, amount: float
) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, width), generator=generator).float()
    scores[scores == 0] = -0.0  # signed zeros tie with zeros, as in a sort
    rows_keep = torch.rand(rows, width, generator=generator) >= pruned_before
    if isinstance(amount, int):
        amount = min(amount, int(rows_keep.sum(dim=1).min()) if mode == "relative" else width)
    target = Target("layer", "weight", nn.Linear(width, rows))

    new_rows, count = _prune_each_row(rows_keep, lambda: scores.clone(), amount, mode, target)

    kept = rows_keep.sum(dim=1).tolist()
    if mode == "relative":
        per_row = torch.tensor([amount_count(amount, k) for k in kept])
    else:
        per_row = torch.tensor([max(0, amount_count(amount, width) - (width - k)) for k in kept])
    assert count == int(per_row.sum())
    assert torch.equal(new_rows, stable_sort_selection(rows_keep, scores, per_row))
    assert not torch.any(new_rows & ~rows_keep)
