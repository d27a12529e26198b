"""Allocation: OWL's per-block sparsities, outlier ratios, block influence."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from secateurs.data import BlockInfluence, block_influence, prune_with_data
from secateurs.data.allocation import InfluenceMeter, outlier_ratio, owl_sparsities
from secateurs.errors import PruningError


def test_outlier_ratio_by_hand() -> None:
    scores = [torch.tensor([1.0, 1.0, 1.0, 7.0]), torch.tensor([0.5, 0.5, 0.5, 4.5])]  # mean 16 / 8 = 2
    assert outlier_ratio(scores, m=3.0) == pytest.approx(1 / 8)  # above 6: the 7
    assert outlier_ratio(scores, m=2.0) == pytest.approx(2 / 8)  # above 4: the 7 and the 4.5


@settings(max_examples=60, deadline=None)
@given(
    ratios=st.lists(st.floats(0.0, 0.2), min_size=2, max_size=12),
    target=st.floats(0.1, 0.9),
    lam=st.floats(0.0, 0.2),
)
def test_owl_mean_is_target_within_lambda_and_monotone(ratios: list[float], target: float, lam: float) -> None:
    sparsities = owl_sparsities(ratios, target, lam)
    effective = min(lam, target, 1 - target)
    assert sum(sparsities) / len(sparsities) == pytest.approx(target, abs=1e-9)
    assert all(abs(s - target) <= effective + 1e-9 for s in sparsities)
    for (ra, sa) in zip(ratios, sparsities):
        for (rb, sb) in zip(ratios, sparsities):
            if ra > rb:
                assert sa <= sb + 1e-12  # more outliers -> less sparsity


def test_owl_extremes_reach_lambda_and_weights_count() -> None:
    assert owl_sparsities([0.01, 0.03, 0.02], 0.5, 0.08) == pytest.approx([0.58, 0.42, 0.50])
    assert owl_sparsities([0.02, 0.02], 0.7, 0.08) == [0.7, 0.7]
    weighted = owl_sparsities([0.0, 0.1], 0.5, 0.1, sizes=[3, 1])
    assert (3 * weighted[0] + weighted[1]) / 4 == pytest.approx(0.5)
    assert max(abs(s - 0.5) for s in weighted) == pytest.approx(0.1)
    assert owl_sparsities([0.0, 1.0], 0.95, 0.08) == pytest.approx([1.0, 0.9])  # lambda narrowed to fit [0, 1]
    with pytest.raises(PruningError):
        owl_sparsities([0.1], 1.5)


def test_influence_meter() -> None:
    meter = InfluenceMeter()
    x = torch.randn(2, 3, 8)
    meter(x, 2 * x, None)  # same direction: no influence
    assert meter.value == pytest.approx(0.0, abs=1e-6)
    opposite = InfluenceMeter()
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = -x
    out[0, 2] = x[0, 2]  # a padded position that would count as cos = 1
    opposite(x, out, mask)
    assert opposite.value == pytest.approx(2.0)


class Residual(nn.Module):
    def __init__(self, scale: float, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.linear(x)


class Stack(nn.Module):
    def __init__(self, scales: list[float], width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Linear(width, width)
        self.layers = nn.ModuleList(Residual(s, width) for s in scales)
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_block_influence_ranks_blocks_that_change_little_first() -> None:

    torch.manual_seed(0)
    model = Stack([1.0, 0.0, 0.3])
    influence = block_influence(model, torch.randn(16, 8), progress=False)
    assert list(influence) == ["layers.1", "layers.2", "layers.0"]
    assert influence["layers.1"] == pytest.approx(0.0, abs=1e-6)


def test_owl_allocation_in_prune_with_data_keeps_the_target() -> None:

    torch.manual_seed(0)
    model = Stack([1.0, 1.0, 1.0, 1.0], width=64)
    with torch.no_grad():
        model.layers[3].linear.weight[0, 0] = 40.0  # the last block gets an outlier (nothing downstream sees it)
    report = prune_with_data(model, torch.randn(64, 64), 0.5, method="wanda", allocation="owl", progress=False)
    amounts = report.block_amounts
    assert sum(amounts.values()) / len(amounts) == pytest.approx(0.5, abs=1e-9)
    assert min(amounts, key=amounts.get) == "layers.3"
    assert all(abs(a - 0.5) <= 0.08 + 1e-9 for a in amounts.values())
    assert report.sparsity == pytest.approx(0.5, abs=0.005)  # up to rounding within rows


def test_block_influence_drives_structural_depth_pruning() -> None:
    structural = pytest.importorskip("secateurs.structural")

    torch.manual_seed(0)
    model = Stack([1.0, 0.05, 0.3])
    x = torch.randn(16, 8)
    influence = block_influence(model, x, progress=False)
    assert next(iter(influence)) == "layers.1"
    structural.shrink(model, x, 1, granularity="layer", method=BlockInfluence(influence), aggregate="mean")
    assert len(model.layers) == 2 and [layer.scale for layer in model.layers] == [1.0, 0.3]
