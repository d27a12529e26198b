"""Requests that would do nothing, and inputs that are broken, fail early and say why, in the words of the
interface in use; nothing is half-done or silently skipped."""

from __future__ import annotations

import argparse
import json
import math
import os

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.cli import main
from secateurs.cli.wording import in_cli_words
from secateurs.errors import FactoryError, NothingPrunedError
from secateurs.sources import load_model, portable_files
from secateurs.storage import ModelDirectoryError, WriteError, check_output_dir, read_weights, save_pruned
from secateurs.structural import shrink


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


# ---- no silent no-ops ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "smallest"),
    [
        ({"amount": 0.0}, "amount >= 0.02083"),  # 1/48, the largest selected layer
        ({"amount": 0.01}, "amount >= 0.02083"),
        ({"amount": 0.05, "granularity": "channel"}, "amount >= 0.1667"),  # 1 of 6 rows
        ({"amount": 0.005, "scope": "global"}, "amount >= 0.0119 "),  # 1 of 84 weights
    ],
)
def test_masks_that_prune_nothing_are_an_error_naming_the_smallest_amount(kwargs, smallest):
    model = mlp()
    before = state(model)
    with pytest.raises(NothingPrunedError, match=smallest.replace(".", r"\.")):
        sc.prune(model, **kwargs)
    assert unchanged(model, before) and not sc.is_pruned(model)
    sc.prune(model, **kwargs, allow_noop=True)  # asked for explicitly: accepted


def test_asking_for_a_sparsity_already_reached_says_so():
    model = mlp()
    sc.prune(model, 0.5)
    with pytest.raises(NothingPrunedError, match="already at 50.0% sparsity"):
        sc.prune(model, 0.3)


def test_shrink_that_removes_no_unit_is_an_error():
    model, x = mlp().eval(), torch.randn(2, 8)
    before = state(model)
    with pytest.raises(NothingPrunedError, match="removes no channel"):
        shrink(model, x, 0.05)
    assert unchanged(model, before)
    report = shrink(model, x, 0.05, allow_noop=True)
    assert report.params_after == report.params_before


def test_heads_under_grouped_query_attention_that_round_to_nothing_are_an_error(transformers):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    x = {"input_ids": torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))}
    before = state(model)
    with pytest.raises(NothingPrunedError, match=r"removes no head.*amount >= 0\.5"):
        shrink(model, x, 0.25, granularity="head")
    assert unchanged(model, before)


def test_prune_with_data_refuses_amount_zero_before_reading_calibration():
    with pytest.raises(NothingPrunedError, match="amount above 0"):
        sc.prune_with_data(mlp(), "no-such-calibration-file.txt", 0.0)


def test_cli_amount_zero_is_an_error_naming_the_cli_option(capsys):
    assert main(["prune", "python:" + __file__ + ":tiny", "--amount", "0", "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert "--allow-no-op" in err and "allow_noop" not in err


def test_cli_allow_no_op_saves_and_reports_zero(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "python:" + __file__ + ":tiny", "--amount", "0", "--allow-no-op", "--no-latency",
                 "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["pruned_sparsity"] == 0.0


def tiny() -> nn.Module:
    model = mlp()
    model.input_shape = (1, 8)
    return model


# ---- errors in the words of the interface ------------------------------------------------------------


def test_library_parameters_become_cli_options():
    parser = argparse.ArgumentParser()
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--tokenizer", metavar="PATH")
    parser.add_argument("--prune-normalized", dest="prune_normalized", action="store_true")
    parser.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True)
    message = "pass overwrite=True; or tokenizer=...; prune_normalized=True frees them; latency=False; keep verify=False"
    assert in_cli_words(message, parser) == (
        "pass --overwrite; or --tokenizer PATH; --prune-normalized frees them; --no-latency; keep verify=False"
    )


def test_output_directory_error_names_the_option_on_the_cli(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file").write_text("x")
    assert main(["prune", "demo", "--amount", "0.5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err


# ---- cheap checks first --------------------------------------------------------------------------------


def test_unwritable_output_fails_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere; the check is exercised with a file in the way instead")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(WriteError, match="not writable"):
        check_output_dir(locked / "out")


def test_output_below_a_file_fails_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    loaded = []
    monkeypatch.setattr("secateurs.recipes.prune_pipeline.load_model", lambda *a, **k: loaded.append(1))
    assert main(["prune", "demo", "--amount", "0.5", "--out", str(tmp_path / "file" / "out")]) == 1
    assert "not a directory" in capsys.readouterr().err and not loaded


def test_output_that_does_not_fit_on_disk_is_refused(tmp_path):
    with pytest.raises(WriteError, match="MB free"):
        check_output_dir(tmp_path / "out", needed_bytes=1 << 62)


def test_unknown_model_spec_fails_before_loading(monkeypatch, capsys):
    monkeypatch.setattr("secateurs.recipes.prune_pipeline.load_model", lambda *a, **k: pytest.fail("loaded"))
    assert main(["prune", "torchvison:resnet18", "--amount", "0.5"]) == 2
    assert "did you mean torchvision" in capsys.readouterr().err


# ---- broken inputs named as such -------------------------------------------------------------------------


def test_truncated_weights_file_is_named_as_corrupt(tmp_path):
    saved = save_pruned(mlp(), tmp_path / "m", source="python:x:y", weights_format="dense")
    weights = saved.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(ModelDirectoryError, match=f"{weights} is truncated or corrupt"):
        read_weights(weights)


def test_failing_factory_is_named(tmp_path, monkeypatch):
    module = tmp_path / "broken_factory.py"
    module.write_text("def build():\n    raise RuntimeError('no weights here')\n")
    with pytest.raises(FactoryError, match=r"python:.*broken_factory\.py:build: build\(\) raised RuntimeError: no weights here"):
        load_model(f"python:{module}:build")


def test_nan_weights_are_blamed_on_the_weights_not_the_criterion():
    model = mlp().eval()
    with torch.no_grad():
        model[2].weight[0, 0] = math.nan
    with pytest.raises(sc.PruningError, match=r"2\.weight holds 1 NaN/Inf values; the model is broken before pruning"):
        shrink(model, torch.randn(1, 8), 0.5)


def test_report_lists_every_skipped_layer_including_the_output_layer():
    model = nn.Sequential(nn.Linear(8, 3), *[nn.Linear(3, 3) for _ in range(10)], nn.Linear(3, 8), nn.Linear(8, 4))
    text = str(sc.prune(model, granularity="2:4"))
    assert "skipped 12:" in text and "12.weight" in text and "11.weight" in text


# ---- outputs outlive their source -------------------------------------------------------------------------


def test_saved_hf_model_loads_after_the_source_directory_is_gone(transformers, tmp_path):
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    source = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(source)
    loaded = load_model(f"hf:{source}", input_shape=(1, 8))
    sc.prune(loaded.model, 0.5)
    files = portable_files(loaded.spec)
    assert "config.json" in files and "model.safetensors" not in files
    save_pruned(loaded.model, tmp_path / "out", source=loaded.spec, input_shape=(1, 8), source_files=files)
    for file in source.iterdir():
        file.unlink()
    source.rmdir()
    again = sc.load_pruned(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(again.model(**loaded.example_inputs)[0], loaded.model(**loaded.example_inputs)[0])
