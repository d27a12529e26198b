"""The demo: a fast variant end to end, the cache, the report, and global structured ranking."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.demo import default_config, format_report, load_dataset, parse_ratios, run_demo, trained_model
from secateurs.demo.model import DemoCNN, TrainConfig, _cache_path
from secateurs.demo.reading import reading
from secateurs.demo.sweep import METHODS, DemoConfig, prune_copy
from secateurs.demo.tables import format_matrix, format_table
from secateurs.errors import ModelSpecError

FAST = TrainConfig(epochs=3)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))


def test_fast_demo_end_to_end(tmp_path) -> None:
    config = DemoConfig(ratios=(0.3, 0.9), train=FAST, latency_budget_s=0.005, latency_batch=8)
    result = run_demo(config, progress=False)
    assert not result.cached and result.cache_path.is_file()
    assert str(result.cache_path).startswith(str(tmp_path / "cache"))
    assert len(result.rows) == len(METHODS) * 2 * 2
    assert 0.3 < result.dense.accuracy <= 1.0  # a few epochs already learn the digits
    for row in result.rows:
        ev = row.evaluation
        assert 0.0 <= ev.accuracy <= 1.0 and ev.latency_ms > 0
        if "shrunk" in row.method:  # channels removed for real: a smaller dense model
            assert ev.params == ev.nonzero and ev.params < (1 - 0.8 * row.ratio) * result.dense.params
            assert ev.dense_bytes < result.dense.dense_bytes
        else:  # masks keep every shape
            assert ev.params == result.dense.params and ev.nonzero < result.dense.nonzero
            assert ev.sparse_bytes < result.dense.sparse_bytes and ev.dense_bytes == result.dense.dense_bytes
        if "unstructured" in row.method:  # every pruned layer loses exactly the ratio; the output layer is kept
            assert 0.8 * row.ratio < ev.sparsity < row.ratio
    heavy = [row for row in result.rows if row.ratio == 0.9]
    assert all(row.evaluation.accuracy < result.dense.accuracy for row in heavy)

    table, matrix, text = format_table(result), format_matrix(result), reading(result)
    assert table.count("\n") >= len(result.rows) + 2 and "dense (not pruned)" in table
    assert "L2 structured global" in matrix and "0.9" in matrix.splitlines()[0]
    assert "L2 structured shrunk local" in matrix
    assert "keeps accuracy best" in text and "physically removed" in text
    assert text in format_report(result) and table not in format_report(result, full=False)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["reading"] == text and len(payload["rows"]) == len(result.rows)

    again = run_demo(config, progress=False)
    assert again.cached and again.dense.accuracy == result.dense.accuracy
    assert [r.evaluation.accuracy for r in again.rows] == [r.evaluation.accuracy for r in result.rows]


def test_cache_is_reused_written_atomically_and_repaired() -> None:
    one_epoch = TrainConfig(epochs=1)
    rng, numpy_rng, python_rng = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    first = trained_model(config=one_epoch, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng)  # training seeds the global generators, then restores them
    assert np.array_equal(np.random.get_state()[1], numpy_rng) and random.getstate() == python_rng
    assert not first.cached
    assert sorted(os.listdir(first.path.parent)) == [first.path.name]  # no temp files left
    second = trained_model(config=one_epoch, progress=False)
    assert second.cached and second.accuracy == first.accuracy
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    first.path.write_bytes(b"garbage")
    repaired = trained_model(config=one_epoch, progress=False)
    assert not repaired.cached and repaired.accuracy == first.accuracy  # training is deterministic
    assert _cache_path("digits", FAST) != first.path  # another training config, another cache entry


def test_mnist1d_leaves_global_generators_alone() -> None:
    states = np.random.get_state()[1].copy(), random.getstate()
    data = load_dataset("mnist1d")
    assert data.sample_shape == (1, 40) and len(data.y_train) == 4000 and len(data.y_test) == 1000
    assert np.array_equal(np.random.get_state()[1], states[0]) and random.getstate() == states[1]


def test_demo_cnn_shapes() -> None:
    assert DemoCNN((1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert DemoCNN((1, 40), 10)(torch.zeros(2, 1, 40)).shape == (2, 10)
    with pytest.raises(ModelSpecError):
        DemoCNN((1, 2, 2, 2), 10)


def two_layers() -> nn.Sequential:
    """A small-fan-in layer and a large-fan-in one with the same per-weight scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.normal_()
    return model


def zero_rows(model: nn.Sequential) -> list[float]:
    return [float((layer.weight == 0).all(dim=1).float().mean()) for layer in (model[0], model[2])]


def test_layer_normalized_makes_global_structured_ranking_fair() -> None:
    raw = two_layers()
    sc.prune(raw, 0.5, method="l2", granularity="channel", scope="global", normalize_scores=False)
    small, large = zero_rows(raw)
    assert small > 0.9 and large < 0.1  # raw norms grow with fan-in: the small layer goes first

    fair = two_layers()
    sc.prune(fair, 0.5, method="l2", granularity="channel", scope="global")  # normalize_scores=True by default
    assert all(0.25 < fraction < 0.75 for fraction in zero_rows(fair))


def test_global_random_structured_is_uniform_across_layers() -> None:
    fractions = []
    for seed in range(4):
        model = two_layers()
        sc.prune(model, 0.5, method="random", granularity="channel", scope="global", seed=seed)
        fractions.append(zero_rows(model))
    small = sum(f[0] for f in fractions) / len(fractions)
    large = sum(f[1] for f in fractions) / len(fractions)
    assert 0.3 < small < 0.7 and 0.3 < large < 0.7


def test_prune_copy_leaves_the_original_alone() -> None:
    model = DemoCNN((1, 8, 8), 10)
    before = [p.clone() for p in model.parameters()]
    pruned = prune_copy(model, METHODS[3], "global", 0.5)
    assert sc.is_pruned(pruned) and not sc.is_pruned(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_config_helpers() -> None:
    assert parse_ratios("0.1, 0.5,0.9") == (0.1, 0.5, 0.9)
    for bad in ("", "0.5,1.0", "x"):
        with pytest.raises(ModelSpecError, match="fractions between 0 and 1"):
            parse_ratios(bad)
    config = default_config(epochs=3, ratios=(0.5,))
    assert config.train.epochs == 3 and config.ratios == (0.5,)
