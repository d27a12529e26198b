"""secateurs.analysis.sensitivity: exact restoration, ranking, every granularity, reuse, files, and the CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.analysis import (
    EvaluationError,
    SensitivityResult,
    UnitCurve,
    exact_pattern,
    proxy_metric,
    sensitivity,
)
from secateurs.cli.app import main
from secateurs.errors import PruningError, SelectionError, UnsupportedOperationError

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


def mlp(fragile: int | None = None) -> nn.Sequential:
    """An MLP whose layers lose little to 50% magnitude pruning (60% of their weights are near zero), except
    ``fragile``, whose weights all have one magnitude: pruning half of it removes half its signal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))
    with torch.no_grad():
        for index in (0, 2, 4):
            weight = model[index].weight
            if index == fragile:
                weight.copy_(weight.sign() * 0.3)
            else:
                weight.mul_((torch.rand_like(weight) > 0.6).float() + 1e-4)
    return model.eval()


def snapshot(model: nn.Module) -> dict:
    """Everything a scan could leave behind: values, parameter objects, buffers, masks, hooks, flags."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "params": {name: id(p) for name, p in model.named_parameters()},
        "masks": sc.mask_state_dict(model),
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._load_state_dict_post_hooks), "forward" in m.__dict__)
                  for m in model.modules()],
        "training": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
    }


def assert_restored(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert after["params"] == before["params"]
    assert after["masks"].keys() == before["masks"].keys()
    assert all(torch.equal(after["masks"][k], v) for k, v in before["masks"].items())
    assert {k: v for k, v in after.items() if k not in ("state", "masks")} == {
        k: v for k, v in before.items() if k not in ("state", "masks")
    }


def x_batch() -> torch.Tensor:
    return torch.randn(32, 8, generator=torch.Generator().manual_seed(1))


# ---- restoration and ranking ---------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["unstructured", "2:4", "in", "channel"])
def test_the_model_ends_exactly_as_it_began(granularity):
    model = mlp()
    sc.prune(model, 0.25, include="2.weight")  # an existing mask must come back untouched too
    before = snapshot(model)
    metric = proxy_metric(model, example_inputs=(x_batch(),))
    amounts = None if granularity == "2:4" else (0.25, 0.75)
    result = sensitivity(model, metric, granularity=granularity, amounts=amounts, example_inputs=(x_batch(),),
                         progress=False)
    assert_restored(model, before)
    for curve in result.curves:  # every perturbation that zeroed something changed the output
        assert all((value > 0) == (removed > 0) for value, removed in zip(curve.values, curve.removed))
    if granularity == "unstructured":  # the masked layer is already at 25%: asking for 25% is the dense model
        assert result.curve("2.weight").removed[0] == 0 and result.curve("2.weight").values[0] == 0.0
    assert metric(model) == 0.0


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "taylor"])
def test_data_aware_methods_are_undone_exactly(method):
    model = mlp()
    before = snapshot(model)
    x = x_batch()
    labelled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, model(x).argmax(-1)), batch_size=16)
    result = sensitivity(model, proxy_metric(model, example_inputs=(x,)), method=method,
                         calibration=labelled if method == "taylor" else x, amounts=(0.5,), progress=False)
    assert_restored(model, before)  # SparseGPT rewrites the weights it keeps: they come back too
    assert result.method == method and len(result.curves) == 3


def test_a_fragile_layer_ranks_most_sensitive():
    model = mlp(fragile=2)
    result = sensitivity(model, proxy_metric(model, example_inputs=(x_batch(),)), amounts=(0.25, 0.5), progress=False)
    assert result.most_sensitive(1) == ["2.weight"]
    assert result.fragile_units(max_drop=0.05) == ["2.weight"]
    limits = result.max_amounts(max_drop=0.05)
    assert limits["2.weight"] == 0.0 and limits["0.weight"] == 0.5
    assert result.drop("2.weight", 0.5) > 5 * result.drop("4.weight", 0.5) > 0


def test_a_user_function_metric_and_what_the_curves_hold():
    model = mlp()
    x = x_batch()
    labels = mlp()(x).argmax(-1)
    calls = []

    def agreement(candidate: nn.Module) -> float:
        calls.append(1)
        return 100.0 * float((candidate(x).argmax(-1) == labels).float().mean())

    result = sensitivity(model, agreement, amounts=(0.0, 0.5, 0.9), units=["0.*", "re:4\\.weight"], progress=False)
    assert result.units == ["0.weight", "4.weight"] and result.dense == 100.0 and result.higher_is_better
    assert len(calls) == result.evaluations == 1 + 2 * 2  # amount 0 removes nothing: the dense value, not re-run
    curve = result.curve("0.weight")
    assert curve.values[0] == 100.0 and curve.removed == [0, 128, 230]
    assert curve.params_removed == curve.removed and curve.params == 256 and result.model_params == sum(
        p.numel() for p in model.parameters())


# ---- structural granularities --------------------------------------------------------------------


def test_channel_curves_equal_what_shrink_gives():
    model = mlp()
    x = x_batch()
    metric = proxy_metric(model, example_inputs=(x,))
    result = sensitivity(model, metric, granularity="channel", amounts=(0.25, 0.5), example_inputs=(x,), progress=False)
    assert [c.kind for c in result.curves] == ["channel"] * 3
    name = result.units[1]
    shrunk = copy.deepcopy(model)
    report = sc.shrink(shrunk, (x,), 0.0, per_layer=result.per_layer({name: 0.5}))
    assert report.params_before - report.params_after == result.curve(name).params_removed[1]
    assert metric(shrunk) == pytest.approx(result.curve(name).values[1], abs=1e-5)  # masked == shrunk


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x):
        return x + self.inner(x)


def test_layer_granularity_bypasses_each_block_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), *[Residual(16) for _ in range(3)], nn.Linear(16, 2)).eval()
    x = torch.randn(4, 8)
    before = snapshot(model)
    result = sensitivity(model, proxy_metric(model, example_inputs=(x,)), granularity="layer", example_inputs=(x,),
                         progress=False)
    assert result.units == ["1", "2", "3"] and result.amounts == [1.0] and result.method == "removal"
    assert all(c.params_removed == [16 * 16 * 2 + 32] for c in result.curves)
    assert_restored(model, before)
    with pytest.raises(PruningError, match="per container"):
        result.per_layer({"1": 1.0})


@pytest.fixture(scope="module")
def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=4, n_head=4, vocab_size=64, n_positions=32, bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    return model, torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))


def test_heads_of_a_transformer(gpt2):
    model, ids = gpt2
    before = snapshot(model)
    result = sensitivity(model, proxy_metric(model, ids), granularity="head", amounts=(0.25, 0.5),
                         example_inputs={"input_ids": ids[:1]}, progress=False)
    assert len(result.curves) == 4 and {c.kind for c in result.curves} == {"head"}
    assert all(c.removed == [1, 2] for c in result.curves)  # of 4 heads
    assert_restored(model, before)


# ---- activation reuse ----------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["unstructured", "layer"])
def test_reuse_skips_earlier_blocks_and_changes_no_value(gpt2, granularity):
    model, ids = gpt2
    metric = proxy_metric(model, ids, loss=False)
    attention_runs = []
    handle = model.transformer.h[0].attn.register_forward_hook(lambda *args: attention_runs.append(1))
    options = {"granularity": granularity, "example_inputs": {"input_ids": ids[:1]}, "progress": False}
    if granularity == "unstructured":
        options["amounts"] = (0.5,)
    try:
        results = {}
        for reuse in (False, True):
            attention_runs.clear()
            results[reuse] = sensitivity(model, metric, reuse_activations=reuse, **options)
            results[reuse].runs = len(attention_runs)
    finally:
        handle.remove()
    full, reused = results[False], results[True]
    assert reused.runs < full.runs  # units in later blocks never ran block 0
    assert any("activations reused" in note for note in reused.notes)
    for a, b in zip(full.curves, reused.curves):
        assert a.name == b.name
        assert a.values == pytest.approx(b.values, rel=1e-5, abs=1e-7)


def test_reuse_needs_an_output_metric(gpt2):
    model, _ = gpt2
    with pytest.raises(UnsupportedOperationError, match="OutputMetric"):
        sensitivity(model, lambda m: 1.0, amounts=(0.5,), reuse_activations=True, progress=False)


# ---- requests refused before any evaluation ------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        ({"granularity": "2:4", "amounts": (0.5,)}, PruningError, "fixed amount (0.5) of each unit; drop amounts"),
        ({"granularity": "channel", "amounts": (0.5, 1.0)}, PruningError, "[0, 1)"),
        ({"amounts": (0.5, 2)}, PruningError, "not counts"),
        ({"amounts": ()}, PruningError, "non-empty sequence"),
        ({"granularity": "channel"}, PruningError, "pass example_inputs"),
        ({"granularity": "layer", "method": "l2"}, PruningError, "drop method"),
        ({"method": "wanda"}, PruningError, "pass calibration="),
        ({"method": "activation", "calibration": "english"}, PruningError, "structured pattern"),
        ({"method": "nosuch"}, PruningError, "unknown criterion"),
        ({"granularity": "channel", "method": "sparsegpt", "calibration": "english"}, PruningError, "ranks no channels"),
        ({"units": ["nomatch*"]}, SelectionError, "match no unit; units look like: 0.weight"),
        ({"granularity": "diagonal"}, PruningError, "granularity"),
    ],
)
def test_bad_requests_are_refused_before_any_evaluation(options, error, fragment):
    calls = []
    with pytest.raises(error) as caught:
        sensitivity(mlp(), lambda m: calls.append(1) or 1.0, progress=False, **options)
    assert fragment in str(caught.value) and not calls


# ---- progress, files, plots ----------------------------------------------------------------------


def test_progress_bar_only_when_asked(capsys):
    model = mlp()
    sensitivity(model, lambda m: 1.0, amounts=(0.5,), progress=False)
    assert capsys.readouterr().err == ""
    sensitivity(model, lambda m: 1.0, amounts=(0.5,), progress=True)
    assert "sensitivity" in capsys.readouterr().err


def scanned() -> SensitivityResult:
    model = mlp(fragile=4)
    return sensitivity(model, proxy_metric(model, example_inputs=(x_batch(),)), amounts=(0.25, 0.5, 0.75),
                       progress=False)


def test_json_and_csv_round_trip(tmp_path):
    result = scanned()
    result.to_json(tmp_path / "s.json")
    again = SensitivityResult.from_json(tmp_path / "s.json")
    assert again == result and again.most_sensitive() == result.most_sensitive()
    assert SensitivityResult.from_json(result.to_json()) == result
    result.to_csv(tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "unit,kind,amount,value,drop,removed,params_removed,unit_params,dense"
    assert len(lines) == 1 + 3 * 3
    first = lines[1].split(",")
    assert first[0] == "0.weight" and float(first[2]) == 0.25 and float(first[3]) == result.curves[0].values[0]
    with pytest.raises(EvaluationError, match="not a sensitivity result"):
        SensitivityResult.from_dict({"format": "something else"})
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_plots_are_valid_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    result = scanned()
    assert result.plot(tmp_path / "s.png").read_bytes().startswith(PNG)
    assert b"<svg" in result.plot(tmp_path / "s.svg").read_bytes()
    many = copy.deepcopy(result)  # past the legend's limit the curves are coloured in model order
    many.curves = [UnitCurve(f"block.{i}.weight", "parameter", 10, 10, [0.25, 0.5], [0.1 * i, 0.2 * i], [2, 5], [2, 5])
                   for i in range(14)]
    many.amounts = [0.25, 0.5]
    assert many.plot(tmp_path / "many.png").read_bytes().startswith(PNG)
    single = copy.deepcopy(result)  # one amount (N:M, blocks): bars
    single.amounts = [0.5]
    single.curves = [UnitCurve(c.name, c.kind, c.size, c.params, [0.5], [c.values[1]], [1], [1]) for c in result.curves]
    assert single.plot(tmp_path / "bars.png").read_bytes().startswith(PNG)
    with pytest.raises(EvaluationError, match=r"\.png or \.svg"):
        result.plot(tmp_path / "s.pdf")


def test_table_and_per_layer_patterns():
    result = scanned()
    table = result.table(2).splitlines()
    assert table[0].split() == ["unit", "params", "drop@0.25", "drop@0.5", "drop@0.75", "mean", "drop"]
    assert table[1].startswith("4.weight") and table[-1] == "... and 1 more units"
    assert exact_pattern("conv.weight[0]") == "re:conv\\.weight\\[0\\]" and exact_pattern("fc.weight") == "fc.weight"
    assert result.per_layer({"0.weight": 0.3}) == {"0.weight": 0.3}
    with pytest.raises(PruningError, match="not in this result"):
        result.per_layer({"nope": 0.3})
    assert math.isinf(SensitivityResult("m", True, "", "unstructured", "magnitude", 1.0, [0.5],
                                        [UnitCurve("a", "parameter", 1, 1, [0.5], [float("nan")], [1], [1])],
                                        1).drops("a")[0])


# ---- the command line ----------------------------------------------------------------------------



def test_cli_scans_the_demo_with_the_proxy(demo_cache, capsys):
    pytest.importorskip("matplotlib")
    out = demo_cache / "sens"
    code = main(["sensitivity", "demo", "--eval", "proxy", "--amounts", "0.5,0.9", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.startswith("sensitivity of loss (lower is better")
    assert "features.conv1.weight" in printed.out and f"wrote {out / 'sensitivity.json'}" in printed.out
    result = SensitivityResult.from_json(out / "sensitivity.json")
    assert result.amounts == [0.5, 0.9] and len(result.curves) == 4
    assert (out / "sensitivity.png").read_bytes().startswith(PNG)
    assert (out / "sensitivity.csv").read_text().count("\n") == 1 + 4 * 2
    assert main(["sensitivity", "demo", "--amounts", "0.5", "--out", str(out)]) == 2  # files there: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sensitivity", "demo", "--granularity", "channel", "--amounts", "0.5", "--json", "--quiet",
                 "--units", "features.*"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["granularity"] == "channel" and len(payload["curves"]) == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--granularity", "2:4", "--amounts", "0.5"], "--granularity 2:4 fixes the sparsity at 50%; drop --amounts"),
        (["--granularity", "head", "--amounts", "0.5,1"], "below 1"),
        (["--amounts", "0.9:0.1:0.1"], "START:STOP:STEP"),
        (["--eval", "perplexity:/no/such.txt"], "no such file"),
        (["--method", "wanda"], "--method wanda reads calibration data"),
        (["--calibration", "english", "--eval", "demo"], "--calibration feeds"),
        (["--calibration", "/no/such/text.txt", "--method", "wanda"], "--calibration:"),
        (["--granularity", "layer", "--method", "l2"], "drop --method"),
    ],
)
def test_cli_refuses_bad_usage_before_loading_the_model(args, fragment, capsys):
    # the model spec names nothing loadable: the error must come from the check before the load
    assert main(["sensitivity", "python:no_such_module:build", *args]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("secateurs: error:") and len(error.splitlines()) == 1 and fragment in error
