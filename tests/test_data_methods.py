"""The registry of data-aware methods: what it offers, how a new method plugs in, and early refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.core.criteria import Criterion
from secateurs.data import (
    BlockInfluence,
    DataMethod,
    InputStatistics,
    Needs,
    Wanda,
    available_methods,
    prune_with_data,
    register_method,
    unit_criterion,
)
from secateurs.data import methods as data_methods
from secateurs.errors import PruningError


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


class Stack(nn.Module):
    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_available_methods_are_those_that_read_data() -> None:
    assert available_methods() == ["wanda", "sparsegpt", "taylor", "activation"]


def test_a_registered_method_is_offered_by_prune_with_data_and_unit_criterion(monkeypatch) -> None:
    monkeypatch.setattr(data_methods, "_METHODS", dict(data_methods._METHODS))

    @register_method("wanda_layerwise")
    class WandaLayerwise(DataMethod):
        needs = Needs.INPUT_NORMS

        def criterion(self, evidence: InputStatistics) -> Criterion:
            return Wanda(evidence)

    assert "wanda_layerwise" in available_methods()
    torch.manual_seed(0)
    model = Stack()
    report = prune_with_data(model, torch.randn(32, 16), 0.5, method="wanda_layerwise", progress=False)
    assert report.scope == "local" and len(report.layers) == 3
    assert report.sparsity == pytest.approx(0.5)
    assert {s.name for s in report.skipped} >= {"head.weight"}
    assert isinstance(unit_criterion(Stack(), torch.randn(8, 16), "wanda_layerwise"), Wanda)


def test_unit_ranking_refusals_come_before_any_data_is_read() -> None:
    model = Stack()
    with pytest.raises(PruningError, match="ranks no units"):
        unit_criterion(model, None, "sparsegpt")
    with pytest.raises(PruningError, match="block influence"):
        unit_criterion(model, None, "taylor", granularity="layer")
    with pytest.raises(PruningError, match="unknown data-aware method"):
        unit_criterion(model, None, "magnitude")


def test_block_influence_asks_for_averaged_block_scores() -> None:
    assert BlockInfluence.aggregate == "mean"
