"""``secateurs export`` and ``secateurs bench`` on the demo model: files written and checked, rows side by side,
and bad requests refused in one line before any work."""

from __future__ import annotations

import json

import pytest

from secateurs.cli.app import main
from secateurs.export import read_export_manifest

pytest.importorskip("onnxscript")
pytestmark = pytest.mark.xdist_group("onnx")


@pytest.fixture(scope="module")
def pruned_demo(tmp_path_factory):
    """The demo CNN pruned to 50%, saved by secateurs prune (trained once, in a private cache)."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SECATEURS_CACHE", str(root / "cache"))
        assert main(["prune", "demo", "--amount", "0.5", "--no-latency", "--no-eval", "--out", str(root / "demo50"),
                     "--json"]) == 0  # fmt: skip
        yield root


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secateurs: error: "), lines
    return lines[0]


def test_export_then_bench_the_demo(pruned_demo, capsys, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(pruned_demo / "cache"))
    out = pruned_demo / "export"
    capsys.readouterr()
    assert main(["export", str(pruned_demo / "demo50"), "--format", "onnx,onnx-int8", "--format", "int8",
                 "--format", "torch-export", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "model.int8.onnx" in printed and "onnxruntime.InferenceSession('model.onnx')" in printed
    manifest = read_export_manifest(out)
    assert list(manifest.formats) == ["torch-export", "onnx", "int8", "onnx-int8"]
    assert manifest.source["spec"] == "demo:digits" and manifest.formats["onnx"].check["max_abs_diff"] <= 1e-4

    assert main(["bench", str(pruned_demo / "demo50"), str(out), "--latency-time", "0.02", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["dense", "pruned", "torch-export", "onnx", "int8", "onnx-int8"]
    assert report["threads"] == 1 and rows["dense"]["ratio"]["median"] == 1.0
    assert rows["onnx"]["bytes"] == manifest.formats["onnx"].files["model.onnx"].bytes
    accuracy = {name: row["metrics"]["accuracy"] for name, row in rows.items()}
    assert accuracy["onnx"] == accuracy["torch-export"] == accuracy["pruned"]  # same zeros, same float math
    assert abs(accuracy["onnx-int8"] - accuracy["pruned"]) < 0.05 and abs(accuracy["int8"] - accuracy["pruned"]) < 0.05
    assert all(row["latency"]["median_ms"] > 0 for row in rows.values())


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--format", "onxx"], ["unknown format onxx", "use one of: hf, torch-export"]),
        (["--format", "hf"], ["the hf format saves Hugging Face transformers models", "DemoCNN"]),
    ],
)
def test_bad_exports_are_one_line_and_write_nothing(pruned_demo, capsys, monkeypatch, args, fragments):
    monkeypatch.setenv("SECATEURS_CACHE", str(pruned_demo / "cache"))
    out = pruned_demo / "refused"
    assert main(["export", str(pruned_demo / "demo50"), *args, "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert all(fragment in line for fragment in fragments), line
    assert not out.exists()


def test_an_existing_output_names_the_option(pruned_demo, capsys, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(pruned_demo / "cache"))
    (pruned_demo / "taken").mkdir()
    (pruned_demo / "taken" / "mine.txt").write_text("keep")
    assert (
        main(["export", str(pruned_demo / "demo50"), "--format", "safetensors", "--out", str(pruned_demo / "taken")])
        == 2
    )
    assert "--overwrite" in one_line_error(capsys)
    assert main(["bench", str(pruned_demo / "demo50"), str(pruned_demo / "taken")]) == 2
    assert "is not an export directory" in one_line_error(capsys)
