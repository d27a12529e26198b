"""secateurs.analysis.study: the sweep, recovery and block study, the report's files, ``secateurs report``,
options refused before loading, and the demo ViT."""

from __future__ import annotations

import base64
import copy
import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.analysis import FunctionMetric, StudyResult, study
from secateurs.analysis.figures import FIGURES
from secateurs.cli import study as study_command
from secateurs.cli.app import main
from secateurs.demo import load_dataset
from secateurs.demo.vit import ViTConfig, build_vit, trained_vit
from secateurs.errors import PruningError
from secateurs.recovery import top1_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = ("study.json", "study.csv", "summary.md", "report.html")


def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def quadrant_data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images labelled by their brightest quadrant: learnable in an epoch or two."""
    x = torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    quadrants = torch.stack([x[:, 0, :4, :4].mean((1, 2)), x[:, 0, :4, 4:].mean((1, 2)),
                             x[:, 0, 4:, :4].mean((1, 2)), x[:, 0, 4:, 4:].mean((1, 2))], 1)
    return x, quadrants.argmax(1)


def accuracy_metric(test: tuple[torch.Tensor, torch.Tensor]) -> FunctionMetric:
    return FunctionMetric(lambda model: 100 * top1_accuracy(model, test), name="accuracy", unit="%")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[StudyResult, Path, nn.Module, dict]:
    """One small study with every part that applies to a CNN with training data."""
    model, train, test = tiny_cnn(), quadrant_data(64, 0), quadrant_data(48, 1)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    out = tmp_path_factory.mktemp("study") / "s"
    result = study(
        model, accuracy_metric(test), example_inputs=(test[0][:2],), training_data=(train, test),
        methods=["l1", "l2:shrink"], amounts=(0.5, 0.8), finetune_epochs=1, latency_budget_s=0.002, out_dir=out,
        quiet=True,
    )  # fmt: skip
    return result, out, model, before


def test_a_study_measures_every_copy_and_leaves_the_model_as_it_was(finished):
    result, _, model, before = finished
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())
    assert len(result.rows) == 2 * 2 * 2  # methods x scopes x amounts
    shrunk = [row for row in result.rows if row.method == "L2 structured shrunk"]
    masked = [row for row in result.rows if row.method == "L1 unstructured"]
    assert all(row.params < result.dense_params and row.macs < result.dense_macs for row in shrunk)
    assert all(row.params == result.dense_params and row.nonzero < row.params for row in masked)
    assert all(row.latency_ratio is not None and row.latency_ratio > 0 for row in result.rows)
    assert result.timing["measured"] and result.timing["threads"] == 1


def test_details_recovery_and_sensitivity_are_kept(finished):
    result, *_ = finished
    assert result.settings["detail_amount"] == 0.5 and result.settings["histogram_layers"] == ["0.weight", "2.weight"]
    assert {(h.layer, h.model) for h in result.histograms} == {
        (layer, model) for layer in ("0.weight", "2.weight") for model in ("dense", "L1 unstructured", "L2 structured shrunk")
    }
    masked = next(h for h in result.histograms if h.model == "L1 unstructured" and h.layer == "2.weight")
    assert masked.zeros == 144 and masked.removed == 0 and sum(masked.counts) == 144  # half of 8x4x3x3
    assert len(result.layer_sparsity) == 4 and all(len(item.sparsity) == 2 for item in result.layer_sparsity)
    # default fine-tuning: methods neither random nor shrunk, at the largest amount, fine-tuned and gradual
    assert {(r.method, r.amount, r.mode) for r in result.recovery} == {
        ("L1 unstructured", 0.8, "finetuned"), ("L1 unstructured", 0.8, "gradual")}
    assert result.sensitivity is not None and result.sensitivity.units == ["0.weight", "2.weight"]
    assert result.blocks is None  # a CNN has no stack of repeated blocks


def test_the_report_holds_every_file_and_figure(finished):
    result, out, *_ = finished
    for name in (*REPORT_FILES, "recovery.csv", "sensitivity.csv"):
        assert (out / name).is_file(), name
    figures = [spec.file for spec in FIGURES if spec.applies(result)]
    assert figures == ["curves.png", "histograms.png", "layer_sparsity.png", "sensitivity.png", "pareto.png", "recovery.png"]
    assert all((out / "figures" / name).read_bytes().startswith(PNG) for name in figures)
    rows = (out / "study.csv").read_text().splitlines()
    assert rows[0].startswith("method,scope,amount,value") and len(rows) == 1 + len(result.rows)
    summary = (out / "summary.md").read_text()
    assert "## Findings" in summary and all(f"](figures/{name})" in summary for name in figures)


class Tags(HTMLParser):
    """The tags of a page, and whether every opened element was closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        self.balanced = self.balanced and bool(self.open) and self.open.pop() == tag


def test_report_rebuilds_every_file_from_the_saved_numbers(finished, tmp_path, capsys):
    _, out, *_ = finished
    copied = tmp_path / "copy"
    copied.mkdir()
    (copied / "study.json").write_bytes((out / "study.json").read_bytes())  # the numbers alone, nothing drawn
    (copied / "figures").mkdir()
    (copied / "figures" / "blocks.png").write_bytes(PNG)  # left by an earlier study of a ViT: not this one's
    assert main(["report", str(copied)]) == 0
    assert not (copied / "figures" / "blocks.png").exists()
    assert "rebuilt" in capsys.readouterr().out
    assert (copied / "study.json").read_bytes() == (out / "study.json").read_bytes()
    for name in REPORT_FILES:
        assert (copied / name).read_text() == (out / name).read_text(), name
    page = (copied / "report.html").read_text()
    tags = Tags()
    tags.feed(page)
    assert tags.balanced and not tags.open
    assert len(tags.images) == len(list((copied / "figures").glob("*.png"))) == 6
    assert all(base64.b64decode(src.split(",", 1)[1]).startswith(PNG) for src in tags.images)
    assert all(src.startswith("data:image/png;base64,") for src in tags.images)
    assert "<script" not in page and "http://" not in page and "https://" not in page and "url(" not in page


def test_the_json_round_trips_exactly(finished):
    result, out, *_ = finished
    again = StudyResult.from_json(out / "study.json")
    assert again.to_json() == result.to_json() == (out / "study.json").read_text()


# ---- refused before any work ---------------------------------------------------------------------


def counting_metric() -> tuple[FunctionMetric, list[int]]:
    calls: list[int] = []
    return FunctionMetric(lambda model: calls.append(1) or 1.0), calls


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"amounts": []}, "non-empty list"),
        ({"amounts": (0.5, 1.0)}, "strictly between 0 and 1"),
        ({"methods": ["nosuch"]}, "nosuch"),
        ({"methods": ["magnitude:2:4"]}, "N:M fixes its own sparsity"),
        ({"scopes": ["everywhere"]}, "scopes must be"),
        ({"modes": ["gradual"]}, "no training data is known"),
        ({"finetune_amounts": (0.3,), "amounts": (0.5,)}, "not swept: 0.3"),
        ({"detail_amount": 0.4, "amounts": (0.5,)}, "detail_amount=0.4"),
        ({"histogram_layers": ["nope"]}, "'nope' is not a layer"),
        ({"sensitivity": "bogus"}, "sensitivity='bogus'"),
        ({"blocks": True}, "no stack of repeated blocks"),
        ({"amount": 0.5}, "takes no amount"),
    ],
)
def test_bad_settings_are_refused_before_any_evaluation(settings, fragment):
    metric, calls = counting_metric()
    with pytest.raises(PruningError, match=None) as caught:
        study(tiny_cnn(), metric, example_inputs=(torch.rand(2, 1, 8, 8),), **settings)
    assert fragment in str(caught.value) and not calls


def test_a_study_needs_example_inputs():
    metric, calls = counting_metric()
    with pytest.raises(PruningError, match="example_inputs"):
        study(tiny_cnn(), metric)
    assert not calls


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--amounts", "0.5,1"], "--amounts"),
        (["--amounts", "0.5,0.9", "--finetune-amounts", "0.7"], "not swept: 0.7"),
        (["--amounts", "0.5", "--detail-amount", "0.4"], "--detail-amount 0.4"),
        (["--methods", "l1", "--finetune-methods", "l2:channel"], "--finetune-methods"),
        (["--methods", "nosuch"], "argument --methods"),
        (["--finetune", "0", "--modes", "gradual"], "--finetune EPOCHS"),
        (["--sensitivity", "bogus"], "--sensitivity"),
        (["--eval", "perplexity:/no/such/file.txt"], "no such file"),
        (["--out", "taken"], "--overwrite"),
    ],
)
def test_the_command_refuses_bad_options_before_loading(argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "study.json").write_text("{}")
    monkeypatch.setattr(study_command, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["study", "demo", *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("secateurs: error: ") and fragment in error and len(error.splitlines()) == 1


FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    build.input_shape = (2, 16)
    """
)


def test_the_command_writes_a_report_with_the_proxy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "factory.py").write_text(FACTORY)
    argv = ["study", "python:factory.py:build", "--methods", "l1", "l2:shrink", "--amounts", "0.5", "--scope", "local",
            "--no-latency", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "study-python-factory.py-build"
    assert "output_distance" in printed and "study-python-factory.py-build/report.html" in printed
    assert "no fine-tuning" in printed
    data = json.loads((out / "study.json").read_text())
    assert data["settings"]["modes"] == ["oneshot"] and not data["recovery"] and not data["timing"]["measured"]
    assert all((out / name).is_file() for name in REPORT_FILES)


# ---- the demo ViT and the block study ------------------------------------------------------------

TINY_VIT = ViTConfig(dim=16, depth=2, heads=2, epochs=1)


def test_the_demo_vit_trains_one_epoch_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    trained = trained_vit(TINY_VIT, progress=False)
    assert not trained.cached and trained.path.is_file() and 0.0 <= trained.accuracy <= 1.0
    again = trained_vit(TINY_VIT, progress=False)
    assert again.cached and all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                                 trained.model.state_dict().values()))


def test_the_demo_vit_source_and_its_heads():
    loaded = sc.load_model("demo:vit", weights=False)
    assert loaded.spec == "demo:vit" and loaded.training_data is not None
    assert loaded.run().shape == (1, 10)
    model = build_vit(load_dataset("digits"), TINY_VIT)
    sc.shrink(model, (torch.rand(2, 1, 8, 8),), 0.5, granularity="head")
    assert model.blocks[0].attn.num_heads == 1 and model.blocks[0].attn.qkv.out_features == 3 * 8


def test_the_block_study_finds_fragile_blocks_and_fine_tunes_both_variants():
    data = load_dataset("digits")
    model = build_vit(data, TINY_VIT)
    train, test = (data.x_train[:64], data.y_train[:64]), (data.x_test[:64], data.y_test[:64])
    result = study(model, accuracy_metric(test), example_inputs=(test[0][:1],), training_data=(train, test),
                   methods=["l2:channel"], amounts=(0.3, 0.6), scopes=["local"], modes=["finetuned"], finetune_epochs=1,
                   sensitivity=None, latency=False, exclude_blocks=1, quiet=True)
    blocks = result.blocks
    assert blocks is not None and blocks.sensitivity.units == ["blocks.0", "blocks.1"]
    assert all(curve.removed[-1] > curve.removed[0] > 0 for curve in blocks.sensitivity.curves)
    assert len(blocks.fragile) == 1 and blocks.amount == 0.6 and blocks.epochs == 1
    assert [v.kept for v in blocks.variants] == [[], blocks.fragile]
    assert all(v.finetuned is not None for v in blocks.variants)
    assert [spec.file for spec in FIGURES if spec.applies(result)][-1] == "blocks.png"
    assert copy.deepcopy(result).to_json() == StudyResult.from_dict(json.loads(result.to_json())).to_json()
