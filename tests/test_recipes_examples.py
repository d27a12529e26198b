"""Every recipe in examples/ validates, and runs at small size (its ``smoke:`` overrides, ``--smoke``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import yaml

from secateurs.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
#: Packages an example needs beyond the core.
NEEDS = {"minilm_heads_wanda": ("sentence_transformers", "onnxruntime"), "causal_lm_sparsegpt": ("transformers",),
         "resnet50_latency": ("torchvision",), "vit_study": ("matplotlib",)}  # fmt: skip


@pytest.fixture()
def demo_cache(tmp_path, monkeypatch):
    """The demo CNN and ViT in the cache, untrained: the examples check behaviour, not accuracy."""
    pytest.importorskip("sklearn")
    from secateurs.demo import build_model, load_dataset
    from secateurs.demo.model import TrainConfig, _cache_path
    from secateurs.demo.vit import VIT_DATASET, ViTConfig, build_vit, vit_cache_path

    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    metadata = {"accuracy": "0.1", "train_seconds": "0"}
    for path, model in ((_cache_path("digits", TrainConfig()), build_model(load_dataset("digits"))),
                        (vit_cache_path(ViTConfig()), build_vit(load_dataset(VIT_DATASET)))):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(model.state_dict(), str(path), metadata=metadata)
    return tmp_path


def _user_files(tmp_path: Path) -> list[str]:
    """The examples' user paths, from ../shared: the heads of the STS dev split and of tinyshakespeare (a smoke run
    evaluates a sample of them, but tokenizes a file whole first)."""
    sts, text = SHARED / "stsb" / "sts-dev.csv", SHARED / "tinyshakespeare" / "input.txt"
    if sts.is_file() and text.is_file():
        (tmp_path / "sts.csv").write_text("".join(sts.read_text().splitlines(keepends=True)[:40]))
        (tmp_path / "input.txt").write_text(text.read_text()[:2000])
    else:  # a clone without ../shared: files of the same format, enough for a smoke run's behaviour
        rows = [f"g\tf\t2012\t{i:04d}\t{i % 6}.000\ta man is playing {i} songs .\ta person plays music {i % 6} ."
                for i in range(40)]  # fmt: skip
        (tmp_path / "sts.csv").write_text("\n".join(rows) + "\n")
        (tmp_path / "input.txt").write_text("To be, or not to be, that is the question.\n" * 50)
    return ["--set", f"vars.sts={tmp_path / 'sts.csv'}", "--set", f"vars.text={tmp_path / 'input.txt'}"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_validates_at_full_size(example, tmp_path, capsys):
    assert main(["run", str(example), "--check", *_user_files(tmp_path)]) == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_at_small_size(example, demo_cache, monkeypatch, capsys):
    for package in NEEDS.get(example.stem, ()):
        pytest.importorskip(package)
    monkeypatch.chdir(ROOT)  # the examples' relative paths (python:examples/...) are from the repository root
    out = demo_cache / "run"
    code = main(["run", str(example), "--smoke", "--out", str(out), *_user_files(demo_cache)])
    assert code == 0, capsys.readouterr().err
    state = json.loads((out / "state.json").read_text())["completed"]
    assert len(state) == len(yaml.safe_load(example.read_text())["steps"])
    assert all((out / step["name"] / "result.json").is_file() for step in state)
