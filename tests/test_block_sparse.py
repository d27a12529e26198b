"""The BSR/CSR execution swap: same outputs as the masked model, sparse kernels only where timed faster,
the caller's model never changed. Timings are injected through the ``timer`` seam; none is asserted."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.errors import PruningError
from secateurs.export import sparse
from secateurs.export.sparse import SparseLinear, block_structure, to_block_sparse
from secateurs.measure import Latency, LatencyComparison, LatencyRatio


def fixed_timer(ms: Mapping[str, float]):
    """A timer that answers ``ms[name]`` (1 ms when not given) for every model, without running any."""
    calls = []

    def timer(models, inputs, threads, budget_s) -> LatencyComparison:
        calls.append(list(models))
        latencies = {name: Latency(ms.get(name, 1.0), 0.0, 3, 3, threads) for name in models}
        reference = latencies[next(iter(models))].median_ms
        ratios = {name: LatencyRatio(latency.median_ms / reference, 0.0) for name, latency in latencies.items()}
        return LatencyComparison(next(iter(models)), latencies, ratios, threads, 3)

    timer.calls = calls
    return timer


SPARSE_WINS = {"dense": 2.0, "bsr": 1.0, "csr": 1.5, "block-sparse": 1.0}


def block_pruned_mlp(amount: float = 0.75) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    sc.prune(model, amount, granularity="block:16")
    return model


def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(1))


def output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("layout,expected", [("auto", "bsr"), ("bsr", "bsr"), ("csr", "csr")])
def test_forced_swap_computes_what_the_masked_model_computes(layout: str, expected: str) -> None:
    model, x = block_pruned_mlp(), inputs()
    report = to_block_sparse(model, (x,), min_speedup=0, layout=layout, timer=fixed_timer({}))
    assert [layer.layout for layer in report.layers] == [expected, expected, "dense"]
    assert [type(report.model[i]) for i in (0, 2, 4)] == [SparseLinear, SparseLinear, nn.Linear]
    assert report.model[0].weight.layout == {"bsr": torch.sparse_bsr, "csr": torch.sparse_csr}[expected]
    torch.testing.assert_close(output(report.model, x), output(model, x), rtol=1e-5, atol=1e-6)
    assert report.layers[2].reason == "no zeros"


def test_the_callers_model_is_left_as_it_was() -> None:
    model, x = block_pruned_mlp(), inputs()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    to_block_sparse(model, (x,), min_speedup=0, timer=fixed_timer({}))
    assert sc.is_pruned(model) and all(type(model[i]) is nn.Linear for i in (0, 2, 4))
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_the_swapped_copy_has_its_masks_folded() -> None:
    report = to_block_sparse(block_pruned_mlp(), (inputs(),), min_speedup=0, timer=fixed_timer({}))
    assert not sc.is_pruned(report.model)


def test_the_real_timer_path_runs_end_to_end(monkeypatch) -> None:
    monkeypatch.setattr(sparse, "LAYER_BUDGET_S", 0.005)
    monkeypatch.setattr(sparse, "END_TO_END_BUDGET_S", 0.005)
    model, x = block_pruned_mlp(), inputs()
    report = to_block_sparse(model, (x,), min_speedup=0)
    assert len(report.swapped) == 2 and report.end_to_end is not None and report.end_to_end.threads == 1
    assert set(report.layers[0].times_ms) == {"dense", "bsr", "csr"} and report.latency_ratio > 0
    torch.testing.assert_close(output(report.model, x), output(model, x), rtol=1e-5, atol=1e-6)


def test_layers_stay_dense_where_dense_is_faster() -> None:
    timer = fixed_timer({"dense": 1.0, "bsr": 2.0, "csr": 3.0})
    report = to_block_sparse(block_pruned_mlp(), (inputs(),), timer=timer)
    assert report.swapped == [] and report.end_to_end is None
    assert all(type(module) is not SparseLinear for module in report.model.modules())
    assert report.layers[0].reason == "bsr only 0.50x dense, below min_speedup 1.1"
    assert report.layers[0].times_ms == {"dense": 1.0, "bsr": 2.0, "csr": 3.0}
    assert len(timer.calls) == 2  # two sparse layers timed, no end-to-end comparison


def test_the_fastest_kernel_is_swapped_in_when_it_clears_min_speedup() -> None:
    timer = fixed_timer({"dense": 2.0, "bsr": 1.9, "csr": 1.0, "block-sparse": 1.2})
    report = to_block_sparse(block_pruned_mlp(), (inputs(),), min_speedup=1.5, timer=timer)
    assert [layer.layout for layer in report.swapped] == ["csr", "csr"]
    assert report.layers[0].speedup == 2.0 and report.layers[0].reason == "2.00x dense"
    assert timer.calls[-1] == ["dense", "block-sparse"] and report.latency_ratio == pytest.approx(0.6)
    slower = to_block_sparse(block_pruned_mlp(), (inputs(),), min_speedup=2.5, timer=timer)
    assert slower.swapped == []


def test_block_structure_is_read_from_the_zeros() -> None:
    torch.manual_seed(0)
    for spec, tile in (("block:16", (16, 16)), ("block:8x32", (8, 8)), ("block:64", (64, 64))):
        model = nn.Sequential(nn.Linear(128, 128))
        sc.prune(model, 0.75, granularity=spec, include_output=True)
        assert block_structure(model[0].weight.detach()) == tile  # square: the BSR kernel takes no other
    unstructured = nn.Sequential(nn.Linear(128, 128))
    sc.prune(unstructured, 0.75, include_output=True)
    assert block_structure(unstructured[0].weight.detach()) is None
    report = to_block_sparse(unstructured, (torch.randn(4, 128),), min_speedup=0, timer=fixed_timer({}))
    assert report.layers[0].layout == "csr"
    forced = to_block_sparse(unstructured, (torch.randn(4, 128),), min_speedup=0, layout="bsr", timer=fixed_timer({}))
    assert forced.swapped == [] and "not block-sparse" in forced.layers[0].reason


def test_gpt2_conv1d_layers_swap_and_the_tied_head_stays_dense() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    sc.prune(model, 0.5, granularity="block:16", include="transformer.h.*", include_output=True)
    ids = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(2))
    report = to_block_sparse(model, {"input_ids": ids}, min_speedup=0, timer=fixed_timer({}))
    assert [layer.layout for layer in report.layers[:8]] == ["bsr"] * 8
    assert report.layers[-1].name == "lm_head" and report.layers[-1].layout == "dense"
    with torch.no_grad():
        torch.testing.assert_close(report.model(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_layers_that_cannot_be_swapped_say_why() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
            self.unused = nn.Linear(32, 32)
            self.kept = nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.kept(self.encoder(x))

    torch.manual_seed(0)
    model = Skips().eval()
    sc.prune(model, 0.5, granularity="block:16", include_output=True)
    report = to_block_sparse(model, (torch.randn(2, 5, 32),), min_speedup=0, exclude="kept", timer=fixed_timer({}))
    reasons = {layer.name: layer.reason for layer in report.layers}
    assert reasons["kept"] == "excluded" and reasons["unused"] == "not called on the example inputs"
    assert reasons["encoder.linear1"].startswith("held by torch's TransformerEncoderLayer")


def test_a_module_reading_a_swapped_weight_itself_is_caught_and_nothing_changes() -> None:
    class ReadsWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x) + self.linear.weight.view(-1)[:32]

    torch.manual_seed(0)
    model = ReadsWeight().eval()
    sc.prune(model, 0.5, granularity="block:16", include_output=True)
    with pytest.raises(PruningError, match="exclude="):
        to_block_sparse(model, (torch.randn(2, 32),), min_speedup=0, timer=fixed_timer({}))
    assert type(model.linear) is nn.Linear and sc.is_pruned(model)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"layout": "coo"}, "layout="),
        ({"threads": 0}, "threads="),
        ({"min_speedup": -1}, "min_speedup="),
        ({"exclude": ["nope.*"]}, "names no Linear layer"),
    ],
)
def test_bad_requests_are_refused_before_any_work(options: dict, message: str) -> None:
    timer = fixed_timer({})
    with pytest.raises(PruningError, match=message):
        to_block_sparse(block_pruned_mlp(), (inputs(),), timer=timer, **options)
    assert timer.calls == []


def test_the_report_reads_as_a_table_and_as_json() -> None:
    report = to_block_sparse(block_pruned_mlp(), (inputs(),), min_speedup=0, timer=fixed_timer(SPARSE_WINS))
    text = str(report)
    assert "bsr 16x16" in text and "2 of 3 layers swapped, 1 thread(s)" in text and "ratio 0.50" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["swapped"] == 2 and data["layers"][0]["speedup"] == 2.0 and data["latency_ratio"] == 0.5
