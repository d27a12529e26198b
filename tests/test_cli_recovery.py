"""``secateurs prune --finetune``: pruning on a schedule while fine-tuning, reported in the JSON."""

from __future__ import annotations

import json

from test_cli import FACTORY, assert_one_line_error, secateurs


def test_finetune_reports_dense_pruned_and_finetuned_accuracy(tmp_path) -> None:
    result = secateurs(
        "prune", "demo", "--amount", "0.8", "--finetune", "2", "--schedule", "iterative", "--seed", "0",
        "--no-latency", "--json", "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 0.9 < data["accuracy_dense"] <= 1.0
    assert 0.0 < data["accuracy_pruned"] <= 1.0 and 0.0 < data["accuracy_finetuned"] <= 1.0
    assert data["schedule"]["kind"] == "iterative" and data["epochs"] == 2
    assert abs(data["pruned_sparsity"] - 0.8) < 0.01
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pruning"][-1]["finetune_epochs"] == 2


def test_finetune_without_known_training_data_is_refused(tmp_path) -> None:
    (tmp_path / "factory.py").write_text(FACTORY)
    result = secateurs("prune", "python:factory:build", "--amount", "0.5", "--finetune", "1", "--no-latency", cwd=tmp_path)
    assert_one_line_error(result, 2, "--finetune needs training data")
    result = secateurs("prune", "python:factory:build", "--amount", "0.5", "--schedule", "gradual", cwd=tmp_path)
    assert_one_line_error(result, 2, "give --finetune EPOCHS")
