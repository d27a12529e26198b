"""Measurements: parameter and nonzero counts, MACs, latency and size on disk."""

from __future__ import annotations

import torch
from torch import nn

import secateurs as sc
from secateurs.measure import (
    count_macs,
    count_nonzero,
    count_nonzero_macs,
    count_params,
    mac_counts,
    measure,
    measure_latency,
    size_on_disk,
)
from secateurs.storage import write_weights


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.proj(input_ids) * scale


def test_counts_params_and_nonzeros_once_for_tied_weights() -> None:
    model = Tied()
    assert count_params(model) == 7 * 4
    with torch.no_grad():
        model.embed.weight[:2] = 0
    assert count_nonzero(model) == 5 * 4


def test_macs_are_half_the_counted_flops_for_linear_and_conv() -> None:
    assert count_macs(mlp(), (torch.randn(3, 10),)) == 3 * (10 * 20 + 20 * 5)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    assert count_macs(conv, (torch.randn(1, 2, 5, 5),)) == 4 * 5 * 5 * 2 * 3 * 3


def test_nonzero_macs_scale_with_weight_density() -> None:
    model = mlp()
    inputs = (torch.randn(3, 10),)
    sc.prune(model, 0.5, include="0", granularity="unstructured")  # first layer only, half its weights
    counts = mac_counts(model, inputs)
    assert counts.dense == count_macs(model, inputs) == 3 * (200 + 100)
    assert counts.nonzero == count_nonzero_macs(model, inputs) == 3 * (100 + 100)


def test_keyword_inputs_and_training_flag_restored() -> None:
    model = Keywords().train()
    inputs = {"input_ids": torch.randn(2, 8), "scale": 2.0}
    assert count_macs(model, inputs) == 2 * 8 * 3
    latency = measure_latency(model, inputs, min_run_time=0.01, threads=1, warmup=1)
    assert latency.median_ms > 0 and latency.runs >= 1 and latency.threads == 1
    assert model.training


def test_size_on_disk_is_the_exact_file_size(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    dense = size_on_disk(model)
    assert dense.dense_bytes == write_weights(model.state_dict(), tmp_path / "d.safetensors", "dense")
    assert dense.sparse_bytes == write_weights(model.state_dict(), tmp_path / "s.safetensors", "sparse")
    assert dense.sparse_bytes <= dense.dense_bytes + 256  # nothing to gain, little to lose
    sc.prune(model, 0.5, include_output=True)
    sparse = size_on_disk(model)
    assert sparse.dense_bytes == dense.dense_bytes
    # Each float32 weight costs 4 bytes dense, half of them 4 bytes plus a bit each when sparse.
    weights = 2 * 64 * 64
    expected = dense.dense_bytes - weights * 4 * (0.5 - 1 / 32)
    assert abs(sparse.sparse_bytes - expected) < 600  # header differences only
    assert 0.5 < sparse.ratio < 0.6


def test_measure_collects_everything() -> None:
    model = mlp()
    result = measure(model, (torch.randn(1, 10),), min_run_time=0.01, threads=1)
    data = result.to_dict()
    assert data["params"] == count_params(model) and data["nonzero"] == count_nonzero(model)
    assert data["macs"] == data["nonzero_macs"] == 300
    assert data["latency_ms"] > 0 and data["dense_bytes"] > 0
    assert measure(model, (torch.randn(1, 10),), latency=False).latency_ms is None
