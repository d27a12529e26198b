"""Measurements: parameter and nonzero counts, MACs, size on disk, and latency: models compared are timed
interleaved, after warm-up, with denormals flushed, on a stated thread count, with medians, spreads and ratios."""

from __future__ import annotations

import importlib
import json
import textwrap
import time
from itertools import groupby

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.cli.app import main
from secateurs.measure import (
    MIN_ROUNDS,
    NOISY_SPREAD,
    compare_latency,
    count_macs,
    count_nonzero,
    count_nonzero_macs,
    count_params,
    flushing_denormals,
    mac_counts,
    measure,
    measure_latency,
    size_on_disk,
)
from secateurs.recipes.prune_result import LATENCY_KEYS
from secateurs.storage import write_weights

measure_module = importlib.import_module("secateurs.measure")  # the package exports a function of that name


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
    latency = measure_latency(model, inputs, budget_s=0.01, warmup=1)
    assert latency.median_ms > 0 and latency.calls >= latency.rounds >= MIN_ROUNDS and latency.threads == 1
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
    result = measure(model, (torch.randn(1, 10),), budget_s=0.01)
    data = result.to_dict()
    assert data["params"] == count_params(model) and data["nonzero"] == count_nonzero(model)
    assert data["macs"] == data["nonzero_macs"] == 300
    assert data["latency_ms"] > 0 and data["dense_bytes"] > 0
    assert data["latency"]["threads"] == 1 and isinstance(data["latency_noisy"], bool) and data["latency_spread"] >= 0
    static = measure(model, (torch.randn(1, 10),), latency=False)
    assert static.latency_ms is None and static.to_dict()["latency_noisy"] is None


# ---- latency: one way to time, for every command ---------------------------------------------------


class Probe(nn.Module):
    """A small model that writes down, at every call, its name and the conditions it runs under."""

    def __init__(self, name: str, log: list, sleep: float = 0.0) -> None:
        super().__init__()
        self.name, self.log, self.sleep = name, log, sleep
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conditions = (torch.get_num_threads(), flushing_denormals(), torch.is_grad_enabled(), self.training)
        self.log.append((self.name, *conditions))
        if self.sleep:
            time.sleep(self.sleep)
        return self.proj(x)


INPUTS = (torch.randn(2, 4),)


def test_models_compared_are_timed_interleaved_round_by_round() -> None:
    log: list = []
    models = {"dense": Probe("dense", log), "pruned": Probe("pruned", log)}
    timing = compare_latency(models, INPUTS, budget_s=0.02, warmup=2, rounds=6)
    names = [entry[0] for entry in log]
    assert names[:4] == ["dense", "dense", "pruned", "pruned"]  # warm-up, not counted
    timed = names[4:]
    assert timed.count("dense") == timing["dense"].calls and timed.count("pruned") == timing["pruned"].calls
    # Six rounds, each timing both models once, the order rotating: dense|pruned, pruned|dense, ...
    assert [name for name, _ in groupby(timed)] == ["dense", "pruned"] * 3 + ["dense"]
    assert timing.rounds == timing["dense"].rounds == 6 and timing.reference == "dense"
    assert timing.ratios["dense"].median == 1.0 and timing.ratios["pruned"].median > 0


def test_timing_runs_on_the_stated_threads_with_denormals_flushed_and_restores_both() -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    threads = torch.get_num_threads()
    log: list = []
    model = Probe("model", log).train()
    try:
        torch.set_num_threads(2)
        measure_latency(model, INPUTS, budget_s=0.005, rounds=3)
        assert {entry[1:] for entry in log} == {(1, True, False, False)}  # 1 thread, flushed, no grad, eval
        assert torch.get_num_threads() == 2 and not flushing_denormals() and model.training
        log.clear()
        torch.set_flush_denormal(True)
        measure_latency(model, INPUTS, threads=3, budget_s=0.005, rounds=3)
        assert {entry[1] for entry in log} == {3}
        assert torch.get_num_threads() == 2 and flushing_denormals()
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


def test_a_slow_model_gets_fewer_rounds_and_still_a_median() -> None:
    log: list = []
    slow, fast = Probe("slow", log, sleep=0.03), Probe("fast", log)
    timing = compare_latency({"slow": slow, "fast": fast}, INPUTS, budget_s=0.05, warmup=1)
    assert timing.rounds == MIN_ROUNDS and timing["slow"].calls == MIN_ROUNDS  # one call per round, past the budget
    assert timing["slow"].median_ms > 0 and timing.ratios["fast"].median > 0
    assert timing["fast"].calls > timing["slow"].calls  # the fast model fills its share with longer blocks


def scripted_timings(monkeypatch, seconds_per_call: dict[nn.Module, list[float]]) -> None:
    """Replace the clock: each block of calls takes the next scripted seconds per call of its model."""
    queues = {model: iter(values) for model, values in seconds_per_call.items()}
    monkeypatch.setattr(measure_module, "_block_seconds", lambda model, inputs, calls: calls * next(queues[model]))


def test_spread_and_noisy_flag_come_from_the_rounds(monkeypatch) -> None:
    dense, pruned = nn.Linear(4, 4), nn.Linear(4, 4)
    # One warm-up block, then four rounds; steady timings spread nothing.
    scripted_timings(monkeypatch, {dense: [2e-3] * 5, pruned: [1e-3] * 5})
    steady = compare_latency([dense, pruned], INPUTS, warmup=1, rounds=4)
    assert steady["0"].median_ms == pytest.approx(2.0) and steady.ratios["1"].median == pytest.approx(0.5)
    assert steady.spread == 0 and not steady.noisy

    # Load that slows both models in the same rounds: the times spread, their per-round ratio does not.
    load = [1, 1, 2, 1, 2]
    scripted_timings(monkeypatch, {dense: [2e-3 * f for f in load], pruned: [1e-3 * f for f in load]})
    loaded = compare_latency([dense, pruned], INPUTS, warmup=1, rounds=4)
    assert loaded["0"].spread > NOISY_SPREAD and loaded["0"].noisy and loaded.noisy
    assert loaded.ratios["1"].median == pytest.approx(0.5) and not loaded.ratios["1"].noisy
    data = json.loads(json.dumps(loaded.to_dict()))
    assert data["noisy"] is True and data["latencies"]["0"]["spread"] == pytest.approx(loaded["0"].spread)


@pytest.mark.parametrize(
    ("models", "options", "fragment"),
    [
        ({}, {}, "models is empty"),
        (None, {"threads": 0}, "threads=0"),
        (None, {"budget_s": 0}, "budget_s=0"),
        (None, {"warmup": 0}, "warmup=0"),
        (None, {"rounds": 0}, "rounds=0"),
    ],
)
def test_bad_timing_requests_fail_before_any_forward_pass(models, options, fragment) -> None:
    log: list = []
    with pytest.raises(ValueError, match=fragment):
        compare_latency({"m": Probe("m", log)} if models is None else models, INPUTS, **options)
    assert log == []


# ---- the commands time through the one module --------------------------------------------------------


FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))

    build.input_shape = (2, 16)
    """
)


@pytest.fixture()
def timings(tmp_path, monkeypatch) -> list[dict[str, nn.Module]]:
    """Every set of models timed anywhere (all timing goes through the same rounds), from a directory with a factory."""
    (tmp_path / "factory.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    seen: list[dict[str, nn.Module]] = []
    real = measure_module._timed_rounds

    def spy(models, *args):
        seen.append(dict(models))
        return real(models, *args)

    monkeypatch.setattr(measure_module, "_timed_rounds", spy)
    return seen


def test_prune_times_dense_and_pruned_in_one_comparison(timings, capsys, monkeypatch) -> None:
    prune = ["prune", "python:factory.py:build", "--amount", "0.5", "--latency-time", "0.01"]
    assert main([*prune, "--json"]) == 0
    assert len(timings) == 1 and list(timings[0]) == ["before", "after"]  # timed together, nowhere else
    before, after = timings[0]["before"], timings[0]["after"]
    assert before is not after and count_nonzero(before) > count_nonzero(after)  # an untouched copy of the dense model
    data = json.loads(capsys.readouterr().out)
    assert set(LATENCY_KEYS) <= set(data)
    assert data["latency_ms_before"] > 0 and data["latency_ms_after"] > 0 and data["latency_ratio"] > 0
    assert set(data["latency_spread"]) == {"before", "after", "ratio"} and isinstance(data["latency_noisy"], bool)
    assert data["latency_threads"] == 1 and data["latency_rounds"] >= MIN_ROUNDS

    monkeypatch.setattr(measure_module, "NOISY_SPREAD", -1.0)  # every spread counts as noisy
    assert main(prune) == 0 and len(timings) == 2
    report = capsys.readouterr().out
    assert "latency ms" in report and "latency ratio" in report and "1 thread, interleaved" in report
    assert "warning: noisy latency" in report


def test_no_latency_times_nothing_and_summary_times_one_model(timings, capsys) -> None:
    assert main(["prune", "python:factory.py:build", "--amount", "0.5", "--no-latency", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert timings == [] and all(data[key] is None for key in LATENCY_KEYS)
    assert main(["summary", "python:factory.py:build", "--measure", "--latency-time", "0.01", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["measurements"]
    assert len(timings) == 1 and len(timings[0]) == 1
    assert measured["latency"]["threads"] == 1 and isinstance(measured["latency_noisy"], bool)
