"""Allocation over whole residual blocks (granularity "layer"): which blocks to drop for a target, as shrink takes it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.analysis import (
    SensitivityResult,
    UnitCurve,
    UnreachableTargetError,
    allocate,
    allocation,
    parse_target,
    proxy_metric,
)
from secateurs.errors import PruningError
from secateurs.measure import mac_counts, size_on_disk

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval(), (torch.randn(1, 3, 32, 32),)


@pytest.fixture(scope="module")
def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=4, vocab_size=64, n_positions=32, bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    return model, {"input_ids": torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))}


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measured(kind: str, dense: nn.Module, pruned: nn.Module, inputs) -> float:
    if kind == "macs":
        return mac_counts(pruned, inputs).dense / mac_counts(dense, inputs).dense
    if kind == "size":
        return size_on_disk(pruned).dense_bytes / size_on_disk(dense).dense_bytes
    return params(pruned) / params(dense)


def shrunk(model: nn.Module, inputs, plan) -> tuple[nn.Module, list[str]]:
    """A copy with the plan's blocks removed by shrink, and the blocks shrink reports removed."""
    pruned = copy.deepcopy(model)
    report = sc.shrink(pruned, inputs, 0, granularity="layer", per_layer=plan.per_layer, exclude=plan.exclude)
    return pruned, sorted(report.removed_layers)


@pytest.mark.parametrize("target", ["macs=0.8", "params=0.7", "size=0.7", "sparsity=0.3"])
def test_a_resnet_drops_whole_blocks_to_the_target(resnet, target):
    model, x = resnet
    plan = allocate(model, x, target, granularity="layer", progress=False)
    dropped = sorted(name for name, amount in plan.amounts.items() if amount == 1.0)
    assert dropped and set(plan.amounts.values()) <= {0.0, 1.0}
    assert plan.met and plan.achieved <= parse_target(target).budget * 1.005
    pruned, removed = shrunk(model, x, plan)
    assert removed == dropped
    kind = "params" if target.startswith("sparsity") else target.partition("=")[0]
    assert measured(kind, model, pruned, x) == pytest.approx(plan.achieved, abs=1e-6)


def test_the_proxy_drops_the_block_that_turns_the_stream_least_first(resnet):
    model, x = resnet
    quiet = copy.deepcopy(model)
    with torch.no_grad():
        quiet.layer3[1].bn2.weight.mul_(1e-3)  # layer3.1 now adds almost nothing to its input
    plan = allocate(quiet, x, "macs=0.9", granularity="layer", progress=False)
    assert plan.amounts["layer3.1"] == 1.0 and plan.drop_unit.startswith("(block influence")


@pytest.mark.parametrize("target", ["params=0.8", "macs=0.6"])
def test_a_transformer_drops_whole_layers_to_the_target(gpt2, target):
    model, inputs = gpt2
    plan = allocate(model, inputs, target, granularity="layer", progress=False)
    assert list(plan.amounts) == [f"transformer.h.{i}" for i in range(4)]
    assert plan.met and plan.achieved <= parse_target(target).budget * 1.005
    pruned, removed = shrunk(model, inputs, plan)
    assert len(pruned.transformer.h) == 4 - len(removed) and pruned.config.num_hidden_layers == len(pruned.transformer.h)
    kind = target.partition("=")[0]
    assert measured(kind, model, pruned, inputs) == pytest.approx(plan.achieved, abs=1e-6)


def block_curves(names: list[str], drops: dict[str, float]) -> SensitivityResult:
    """Hand-made block sensitivity: each block dropped alone loses ``drops[name]`` points (default 1)."""
    curves = [UnitCurve(name, "layer", 1, 100, [1.0], [90.0 - drops.get(name, 1.0)], [1], [100]) for name in names]
    return SensitivityResult("accuracy", True, "%", "layer", "removal", 90.0, [1.0], curves, 1000)


def test_sensitivity_curves_keep_the_fragile_blocks_and_spend_max_drop(gpt2):
    model, inputs = gpt2
    names = [f"transformer.h.{i}" for i in range(4)]
    curves = block_curves(names, {"transformer.h.0": 30.0, "transformer.h.3": 0.2, "transformer.h.2": 0.5})
    plan = allocate(model, inputs, "params=0.6", granularity="layer", curves=curves, progress=False)
    assert plan.source == "sensitivity" and plan.amounts["transformer.h.0"] == 0.0
    assert plan.amounts["transformer.h.3"] == 1.0 and plan.predicted_drop == pytest.approx(0.2 + 0.5)
    spend = allocate(model, inputs, None, max_drop=1.0, granularity="layer", curves=curves, progress=False)
    assert [name for name, a in spend.amounts.items() if a] == ["transformer.h.2", "transformer.h.3"]


def test_a_container_keeps_one_block_and_bad_requests_are_refused(gpt2):
    model, inputs = gpt2
    with pytest.raises(UnreachableTargetError) as caught:
        allocate(model, inputs, "params=0.25", granularity="layer", progress=False)  # each layer holds 24% of them
    assert "cannot be reached" in str(caught.value) and 0.25 < caught.value.reachable < 1.0
    kept = allocate(model, inputs, f"params={caught.value.reachable + 0.01:.3f}", granularity="layer", progress=False)
    assert sum(a == 0.0 for a in kept.amounts.values()) == 1
    spared = allocate(model, inputs, "params=0.9", granularity="layer", exclude=["transformer.h.3"], progress=False)
    assert "transformer.h.3" not in spared.amounts and "transformer.h.3" in spared.exclude
    with pytest.raises(PruningError, match="kept or dropped"):
        allocate(model, inputs, "params=0.8", granularity="layer", source="uniform", progress=False)


def test_a_latency_target_reads_the_blocks_timings(gpt2, monkeypatch):
    model, inputs = gpt2
    asked = []

    def timed(model, inputs, blocks, threads):  # no timing: the whole model 10 ms, the last layer the slowest
        asked.append(list(blocks))
        return 10.0, [1.0, 1.0, 1.0, 3.0]

    monkeypatch.setattr(allocation, "block_latencies", timed)
    plan = allocate(model, inputs, "latency=0.8", granularity="layer", verify=False, progress=False)
    assert asked == [list(plan.amounts)] and plan.cost == "latency" and plan.predicted == pytest.approx(0.7)
    assert [name for name, a in plan.amounts.items() if a] == ["transformer.h.3"]


def test_a_metric_is_scanned_block_by_block(resnet):
    model, x = resnet
    plan = allocate(model, x, "params=0.7", granularity="layer", metric=proxy_metric(model, example_inputs=x),
                    method="l2", amounts=(0.5,), progress=False)  # a criterion and amounts are for the other granularities
    assert plan.source == "sensitivity" and plan.drop_unit == "output_distance" and plan.met
