"""Streamed depth pruning (:func:`secateurs.streaming.prune_streaming_depth`): the blocks chosen by the in-memory
block influence, and an output equal to the in-memory model with those blocks deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import secateurs as sc
from secateurs.errors import PruningError
from secateurs.streaming import prune_streaming_depth

transformers = pytest.importorskip("transformers")
IDS = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))


def tiny_llama(layers: int = 4):
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=3, n_head=4, bos_token_id=0,
                                     eos_token_id=0, architectures=["GPT2LMHeadModel"])  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_qwen2():
    config = transformers.Qwen2Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, architectures=["Qwen2ForCausalLM"],
        layer_types=["full_attention"] * 4, block_tags=["a", "b", "c", "d"],  # block_tags: any per-layer list
        eos_token_id=[90, 91, 92, 93],  # as long as the layer count, but token ids: never trimmed
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


def saved(model, directory: Path) -> Path:
    model.save_pretrained(directory, max_shard_size="20KB")
    return directory


def without_blocks(model, dropped: list[str]):
    """The model with the named blocks deleted in memory."""
    stack_name, blocks = sc.data.sequential.find_blocks(model)
    kept = [block for index, block in enumerate(blocks) if f"{stack_name}.{index}" not in dropped]
    parent, _, attribute = stack_name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, torch.nn.ModuleList(kept))
    model.config.num_hidden_layers = len(kept)
    return model


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_drops_the_blocks_in_memory_influence_ranks_lowest_and_matches_deleting_them(tmp_path, factory):
    source = saved(factory(), tmp_path / "model")
    report = prune_streaming_depth(source, tmp_path / "out", IDS, 2 if factory is tiny_llama else 1, progress=False)
    model = type(factory()).from_pretrained(source).eval()
    expected = sc.data.block_influence(model, IDS, progress=False)
    assert report.influence.keys() == expected.keys()
    assert all(report.influence[name] == pytest.approx(expected[name], abs=1e-6) for name in expected)
    assert set(report.dropped) == set(list(expected)[: len(report.dropped)])
    pruned = type(model).from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(logits(pruned), logits(without_blocks(model, report.dropped)), rtol=0, atol=0)


def test_output_is_a_complete_directory_with_a_trimmed_config(tmp_path):
    source = saved(tiny_qwen2(), tmp_path / "model")
    report = prune_streaming_depth(source, tmp_path / "out", IDS, 0.5, progress=False)
    kept = [i for i in range(4) if f"model.layers.{i}" not in report.dropped]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert report.kept == 2 and config["num_hidden_layers"] == 2
    assert config["layer_types"] == ["full_attention"] * 2
    assert config["block_tags"] == ["abcd"[i] for i in kept]
    assert config["eos_token_id"] == [90, 91, 92, 93]
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert {key.split(".")[2] for key in index["weight_map"] if key.startswith("model.layers.")} == {"0", "1"}
    assert not [path for path in (tmp_path / "out").iterdir() if path.name.startswith(".")]
    transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "out")  # loads without missing or unexpected keys


def test_excluded_blocks_are_kept(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    first = prune_streaming_depth(source, tmp_path / "out", IDS, 1, progress=False).dropped[0]
    report = prune_streaming_depth(source, tmp_path / "again", IDS, 1, exclude=[first], progress=False)
    assert report.dropped and first not in report.dropped
    assert report.dropped[0] == min((n for n in report.influence if n != first), key=report.influence.__getitem__)


@pytest.mark.parametrize(
    ("drop", "exclude", "match"),
    [(0, None, "number of blocks"), (4, None, "keep at least one"), (0.1, None, "fraction"),
     (2, "re:model\\.layers\\.[0-2]", "exclude leaves only 1")],
)  # fmt: skip
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, drop, exclude, match):
    source = saved(tiny_llama(), tmp_path / "model")
    with pytest.raises(PruningError, match=match):
        prune_streaming_depth(source, tmp_path / "out", IDS, drop, exclude=exclude, progress=False)
    assert not (tmp_path / "out").exists()


DEPTH_KILLER = """
import os, signal, sys, torch
from secateurs.streaming import prune_streaming_depth
ids = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))
def on_block(timing):
    if timing.index + 1 == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
prune_streaming_depth(sys.argv[1], sys.argv[2], ids, 2, progress=False, on_block=on_block)
"""


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {key: value for shard in sorted(directory.glob("*.safetensors")) for key, value in load_file(shard).items()}


def test_a_run_killed_in_the_influence_pass_resumes_to_the_same_output(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    source = saved(tiny_llama(), tmp_path / "model")
    killed = subprocess.run([sys.executable, "-c", DEPTH_KILLER, str(source), str(tmp_path / "out"), "2"],
                            check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    resumed = prune_streaming_depth(source, tmp_path / "out", IDS, 2, progress=False)
    assert resumed.resumed_from == 2 and [t.index for t in resumed.blocks] == [2, 3]
    whole = prune_streaming_depth(source, tmp_path / "whole", IDS, 2, progress=False)
    assert resumed.influence == whole.influence and resumed.dropped == whole.dropped  # the same floats, restored
    got, expected = _tensors(tmp_path / "out"), _tensors(tmp_path / "whole")
    assert got.keys() == expected.keys() and all(torch.equal(got[key], expected[key]) for key in expected)
    names = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("out", "whole")]
    assert names[0] == names[1]


def test_a_depth_run_with_other_settings_does_not_resume_the_unfinished_one(tmp_path):
    from secateurs.streaming import ResumeError

    source = saved(tiny_llama(), tmp_path / "model")

    def stop(timing):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune_streaming_depth(source, tmp_path / "out", IDS, 1, progress=False, on_block=stop)
    with pytest.raises(ResumeError, match="other settings"):
        prune_streaming_depth(source, tmp_path / "out", IDS, 2, progress=False)
    assert prune_streaming_depth(source, tmp_path / "out", IDS, 2, progress=False, resume=False).resumed_from == 0
