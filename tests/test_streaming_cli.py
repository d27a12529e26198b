"""``secateurs prune hf:DIR --stream``: the same tensors as :func:`secateurs.streaming.prune_streaming`, streaming
chosen when the model would not fit, refusals before any loading, and the JSON keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from secateurs.cli.app import main
from secateurs.recipes import prune_pipeline
from secateurs.streaming import (
    Checkpoint,
    in_memory_peak,
    prune_streaming,
    prune_streaming_depth,
)
from secateurs.streaming import memory as streaming_memory

transformers = pytest.importorskip("transformers")

CALIBRATION_MODULE = """
import torch

def ids():
    return torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))
"""
CALIBRATION = "python:stream_cli_calibration:ids"


def tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                                     eos_token_id=0, architectures=["GPT2LMHeadModel"])  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture()
def checkpoint(tmp_path, monkeypatch) -> Path:
    """A tiny LLaMA saved with save_pretrained, and the calibration module on sys.path."""
    (tmp_path / "stream_cli_calibration.py").write_text(CALIBRATION_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    tiny_llama().save_pretrained(tmp_path / "llama", max_shard_size="20KB")
    return tmp_path / "llama"


@pytest.fixture()
def no_loading(monkeypatch):
    """Fail any test that loads the whole model (or streams) where it should not."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded or streamed")

    monkeypatch.setattr(prune_pipeline, "load_model", refuse)
    monkeypatch.setattr(prune_pipeline, "prune_streaming", refuse)


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    found = Checkpoint(directory)
    return found.read(found.tensors)


def prune_json(capsys, *args: str) -> dict:
    assert main(["prune", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def one_line_error(capsys, *args: str) -> str:
    assert main(["prune", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secateurs: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("options", "library"),
    [
        (["--method", "wanda", "--amount", "0.5"], {"amount": 0.5, "method": "wanda"}),
        (["--method", "sparsegpt", "--granularity", "2:4"], {"method": "sparsegpt", "granularity": "2:4"}),
        (["--method", "wanda", "--amount", "0.4", "--allocation", "owl", "--exclude", "*.mlp.down_proj*"],
         {"amount": 0.4, "method": "wanda", "allocation": "owl", "exclude": ["*.mlp.down_proj*"]}),
    ],
)  # fmt: skip
def test_stream_gives_the_tensors_of_prune_streaming(checkpoint, tmp_path, capsys, options, library):
    prune_json(capsys, f"hf:{checkpoint}", "--stream", "--calibration", CALIBRATION, *options, "--out", str(tmp_path / "cli"))
    calibration = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))
    prune_streaming(checkpoint, tmp_path / "api", calibration, progress=False, **library)
    got, expected = tensors(tmp_path / "cli"), tensors(tmp_path / "api")
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_magnitude_streams_a_gpt2_without_calibration(tmp_path, capsys):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    result = prune_json(capsys, f"hf:{tmp_path / 'gpt2'}", "--stream", "--amount", "0.5", "--out", str(tmp_path / "out"))
    prune_streaming(tmp_path / "gpt2", tmp_path / "api", amount=0.5, method="magnitude", progress=False)
    got, expected = tensors(tmp_path / "out"), tensors(tmp_path / "api")
    assert result["method"] == "magnitude" and result["pruned_sparsity"] == 0.5
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_granularity_layer_removes_the_blocks_prune_streaming_depth_removes(checkpoint, tmp_path, capsys):
    result = prune_json(capsys, f"hf:{checkpoint}", "--stream", "--granularity", "layer", "--amount", "1", "--method",
                        "wanda", "--calibration", CALIBRATION, "--exclude", "model.layers.2", "--out", str(tmp_path / "cli"))  # fmt: skip
    calibration = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))
    report = prune_streaming_depth(checkpoint, tmp_path / "api", calibration, 1, exclude="model.layers.2", progress=False)
    assert result["removed_layers"] == report.dropped and "model.layers.2" not in report.dropped
    assert result["influence"] == pytest.approx(report.influence)
    assert result["params_after"] < result["params_before"] and result["streamed"] is True
    got, expected = tensors(tmp_path / "cli"), tensors(tmp_path / "api")
    assert got.keys() == expected.keys() and all(torch.equal(got[key], expected[key]) for key in expected)
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["num_hidden_layers"] == 2


def test_json_keys_are_those_of_an_in_memory_run_plus_the_stream(checkpoint, tmp_path, capsys):
    common = [f"hf:{checkpoint}", "--method", "wanda", "--amount", "0.5", "--calibration", CALIBRATION]
    in_memory = prune_json(capsys, *common, "--no-latency")
    streamed = prune_json(capsys, *common, "--stream", "--out", str(tmp_path / "out"))
    assert set(in_memory) <= set(streamed)
    assert streamed["streamed"] is True and streamed["format"] == "dense"
    assert streamed["params_after"] == in_memory["params_after"]
    assert streamed["memory"]["peak"] > 0 and streamed["peak_rss_bytes"] > 0
    assert set(streamed["step_seconds"]) == {"read", "forward", "prune", "recompute", "write"}
    assert {"choose-stream", "check", "stream"} <= set(streamed["seconds"]) and "load" not in streamed["seconds"]
    assert streamed["output_dir"] == str(tmp_path / "out") and "model.safetensors.index.json" in streamed["files"]
    assert streamed["load_with"] == f"transformers.LlamaForCausalLM.from_pretrained({str(tmp_path / 'out')!r})"
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out")
    assert model.model.layers[0].mlp.up_proj.weight.eq(0).float().mean() == 0.5


def test_human_summary_says_how_to_load_the_output(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", f"hf:{checkpoint}", "--stream", "--calibration", CALIBRATION, "--method", "wanda",
                 "--amount", "0.5", "--out", str(out), "--layers"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith(f"Streamed hf:{checkpoint} block by block: wanda")
    assert "estimated peak" in text and "over 3 blocks" in text and "model.layers.0.mlp.up_proj.weight" in text
    assert f"from_pretrained({str(out)!r})" in text


def test_streaming_is_chosen_when_the_model_would_not_fit(checkpoint, tmp_path, capsys, monkeypatch):
    needed = in_memory_peak(Checkpoint(checkpoint).nbytes())
    monkeypatch.setattr(streaming_memory, "available_memory", lambda: needed - 1)
    monkeypatch.setattr(prune_pipeline, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    result = prune_json(capsys, f"hf:{checkpoint}", "--method", "wanda", "--amount", "0.5", "--calibration",
                        CALIBRATION, "--out", str(tmp_path / "out"))  # fmt: skip
    assert result["streamed"] is True and "more than the" in result["stream_reason"]
    assert main(["prune", f"hf:{checkpoint}", "--method", "wanda", "--amount", "0.5", "--calibration", CALIBRATION,
                 "--out", str(tmp_path / "again")]) == 0  # fmt: skip
    message = [line for line in capsys.readouterr().err.splitlines() if "streaming it" in line]
    assert len(message) == 1 and "MiB" in message[0] and "available" in message[0] and "--no-stream" in message[0]


def test_a_small_max_memory_chooses_streaming_then_refuses_early(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", f"hf:{checkpoint}", "--method", "sparsegpt", "--amount", "0.5", "--calibration", CALIBRATION,
                 "--out", str(out), "--max-memory", "100MB"]) == 2  # fmt: skip
    notice, error = capsys.readouterr().err.strip().splitlines()
    assert "more than the 100.0 MiB that --max-memory allows: streaming it" in notice
    assert error.startswith("secateurs: error: a streamed run needs about") and "--max-memory" in error and "--activations-dtype bfloat16" in error
    assert not out.exists()


def test_no_stream_loads_the_model_even_when_it_would_not_fit(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(streaming_memory, "available_memory", lambda: 1)
    result = prune_json(capsys, f"hf:{checkpoint}", "--no-stream", "--amount", "0.5", "--no-latency")
    assert "streamed" not in result and result["nonzero_after"] is not None


def test_automatic_choice_names_what_streaming_cannot_do(checkpoint, capsys, monkeypatch, no_loading):
    monkeypatch.setattr(streaming_memory, "available_memory", lambda: 1)
    error = one_line_error(capsys, f"hf:{checkpoint}", "--amount", "0.5")
    assert "would need about" in error and "add --out DIR" in error and "--no-stream" in error


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--shrink", "--granularity", "channel", "--amount", "0.5"], ["--shrink", "one block at a time"]),
        (["--amount", "0.5", "--finetune", "1"], ["--finetune"]),
        (["--target", "sparsity=0.5"], ["--target", "--amount"]),
        (["--amount", "0.5", "--method", "l1"], ["--method magnitude, wanda, sparsegpt", "not l1"]),
        (["--amount", "0.5", "--method", "taylor", "--calibration", CALIBRATION], ["not taylor", "gradients"]),
        (["--amount", "0.5", "--scope", "global"], ["--scope row or local"]),
        (["--amount", "0.5", "--format", "both"], ["--format dense"]),
        (["--amount", "0.5", "--method", "wanda", "--calibration", "train"], ["--calibration train"]),
        (["--amount", "0.5", "NO_OUT"], ["add --out DIR"]),
        (["--granularity", "layer", "--amount", "1"], ["--method wanda", "--calibration SOURCE"]),
        (["--granularity", "layer", "--amount", "1", "--method", "wanda", "--calibration", CALIBRATION, "--include", "x"],
         ["keep some with --exclude"]),
        (["--granularity", "layer", "--amount", "3", "--method", "wanda", "--calibration", CALIBRATION],
         ["--amount 3 would remove all 3 blocks"]),
    ],
)
def test_what_streaming_cannot_do_is_refused_before_loading(checkpoint, tmp_path, capsys, no_loading, options, fragments):
    out = [] if "NO_OUT" in options else ["--out", str(tmp_path / "out")]
    options = [option for option in options if option != "NO_OUT"]
    error = one_line_error(capsys, f"hf:{checkpoint}", "--stream", *options, *out)
    assert all(fragment in error for fragment in fragments), error
    assert not (tmp_path / "out").exists()


def test_sources_and_outputs_streaming_cannot_use_are_refused(checkpoint, tmp_path, capsys, no_loading):
    assert "give MODEL as hf:DIR" in one_line_error(capsys, "demo", "--stream", "--amount", "0.5", "--out", "x")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((checkpoint / "config.json").read_text())
    assert "safetensors" in one_line_error(capsys, f"hf:{tmp_path / 'bare'}", "--stream", "--amount", "0.5", "--out", "x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    error = one_line_error(capsys, f"hf:{checkpoint}", "--stream", "--amount", "0.5", "--out", str(tmp_path / "taken"))
    assert "no streamed run wrote" in error
    error = one_line_error(capsys, f"hf:{checkpoint}", "--no-stream", "--amount", "0.5", "--activations-dtype", "bfloat16")
    assert "--activations-dtype" in error and "--stream" in error
    assert "not a memory size" in one_line_error(capsys, f"hf:{checkpoint}", "--amount", "0.5", "--max-memory", "lots")


def test_a_finished_output_is_replaced_only_with_overwrite(checkpoint, tmp_path, capsys):
    args = [f"hf:{checkpoint}", "--stream", "--amount", "0.5", "--out", str(tmp_path / "out")]
    prune_json(capsys, *args)
    assert "--overwrite" in one_line_error(capsys, *args)
    assert prune_json(capsys, *args, "--overwrite")["resumed_from"] == 0


def test_an_unfinished_output_of_other_settings_needs_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"

    def killed(timing):
        raise RuntimeError("killed after the first block")

    with pytest.raises(RuntimeError, match="killed"):
        prune_streaming(checkpoint, out, None, 0.5, method="magnitude", progress=False, on_block=killed)
    error = one_line_error(capsys, f"hf:{checkpoint}", "--stream", "--amount", "0.3", "--out", str(out))
    assert "--overwrite" in error and "resume=" not in error
    error = one_line_error(capsys, f"hf:{checkpoint}", "--stream", "--granularity", "layer", "--amount", "1",
                           "--method", "wanda", "--calibration", CALIBRATION, "--out", str(out))
    assert "unfinished" in error and "other settings" in error and "--overwrite" in error
    assert (out / "model.safetensors.index.json").exists() is False and any(out.iterdir())


def test_an_unfinished_depth_run_is_continued(checkpoint, tmp_path, capsys):
    calibration = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))

    def killed(timing):
        raise RuntimeError("killed after the first block")

    with pytest.raises(RuntimeError, match="killed"):
        prune_streaming_depth(checkpoint, tmp_path / "out", calibration, 1, progress=False, on_block=killed)
    result = prune_json(capsys, f"hf:{checkpoint}", "--stream", "--granularity", "layer", "--amount", "1", "--method",
                        "wanda", "--calibration", CALIBRATION, "--out", str(tmp_path / "out"))  # fmt: skip
    whole = prune_streaming_depth(checkpoint, tmp_path / "whole", calibration, 1, progress=False)
    assert result["resumed_from"] == 1 and result["removed_layers"] == whole.dropped


def test_recipes_take_the_streaming_options_and_refuse_streaming_their_loaded_model(checkpoint, tmp_path, capsys):
    assert main(["run", "--schema"]) == 0
    properties = json.loads(capsys.readouterr().out)["$defs"]["prune_options"]["properties"]
    assert {"stream", "max_memory", "activations_dtype"} <= set(properties)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: hf:{checkpoint}\nsteps:\n  - prune: {{amount: 0.3, stream: true, latency: false}}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "steps[0].prune.stream: streaming reads a checkpoint from disk" in capsys.readouterr().err
