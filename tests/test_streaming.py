"""Streamed pruning: the same answer as in memory on several architectures, dtypes kept, the memory
refusal, and a run killed with SIGKILL resuming to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import secateurs as sc
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.storage import read_weights
from secateurs.streaming import (
    CheckpointError,
    MemoryBudgetError,
    ResumeError,
    in_memory_peak,
    needs_streaming,
    prune_streaming,
)

transformers = pytest.importorskip("transformers")
IDS = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))


def tiny_llama(layers: int = 3, dtype: torch.dtype = torch.float32):
    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                                     eos_token_id=0, architectures=["GPT2LMHeadModel"])  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_bert():
    config = transformers.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, architectures=["BertModel"])  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


MODELS = {"llama-gqa": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert}


def saved(model, directory: Path) -> Path:
    model.save_pretrained(directory, max_shard_size="20KB")  # several shards, blocks spread across them
    return directory


def in_memory(directory: Path, *args, **kwargs):
    model = type_of(directory).from_pretrained(directory)
    sc.prune_with_data(model, *args, progress=False, **kwargs)
    sc.remove(model)
    return model.state_dict()


def type_of(directory: Path):
    return getattr(transformers, json.loads((directory / "config.json").read_text())["architectures"][0])


def streamed(directory: Path, out: Path, *args, **kwargs):
    report = prune_streaming(directory, out, *args, progress=False, **kwargs)
    return report, type_of(directory).from_pretrained(out).state_dict()


@pytest.mark.parametrize("architecture", list(MODELS))
@pytest.mark.parametrize("method", ["wanda", "magnitude", "sparsegpt"])
def test_streamed_equals_in_memory(tmp_path, architecture, method):
    source = saved(MODELS[architecture](), tmp_path / "model")
    report, got = streamed(source, tmp_path / "out", IDS, 0.5, method=method)
    expected = in_memory(source, IDS, 0.5, method=method)
    assert got.keys() == expected.keys()
    assert report.prune.layers and all(got[layer.name].eq(0).float().mean() == 0.5 for layer in report.prune.layers)
    for key in expected:
        assert torch.equal(got[key] == 0, expected[key] == 0), key
        # SparseGPT's reconstruction: the same float32 operations in the same order; allow rounding anyway.
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6 if method == "sparsegpt" else 0)


@pytest.mark.parametrize("options", [{"granularity": "2:4"}, {"amount": 0.5, "allocation": "owl", "owl_lambda": 0.2}])
def test_patterns_and_owl_match_in_memory(tmp_path, options):
    source = saved(tiny_llama(), tmp_path / "model")
    options = {"amount": None, **options}
    amount = options.pop("amount")
    report, got = streamed(source, tmp_path / "out", IDS, amount, method="wanda", **options)
    expected = in_memory(source, IDS, amount, method="wanda", **options)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    if "allocation" in options:
        assert len(set(report.prune.block_amounts.values())) > 1  # OWL gave the blocks different sparsities


def test_per_layer_amounts_as_a_sensitivity_allocation_gives(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    per_layer = {"model.layers.0.*": 0.2, "model.layers.1.*": 0.6, "model.layers.2.*": 0.4}
    _, got = streamed(source, tmp_path / "out", IDS, method="wanda", per_layer=per_layer)
    expected = in_memory(source, IDS, method="wanda", per_layer=per_layer)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_bf16_checkpoint_round_trips_in_its_dtype(tmp_path):
    source = saved(tiny_llama(dtype=torch.bfloat16), tmp_path / "model")
    _, got = streamed(source, tmp_path / "out", IDS, 0.5, method="sparsegpt")
    expected = in_memory(source, IDS, 0.5, method="sparsegpt")
    assert {t.dtype for t in got.values() if t.is_floating_point()} == {torch.bfloat16}
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_bf16_activations_prune_to_the_same_sparsity(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    report, got = streamed(source, tmp_path / "out", IDS, 0.5, method="wanda", activations_dtype=torch.bfloat16)
    assert got["model.layers.2.mlp.up_proj.weight"].dtype == torch.float32
    assert report.prune.sparsity == pytest.approx(0.5, abs=0.01)


def test_output_is_a_loadable_directory_and_sparse_shards_decode(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    (source / "tokenizer_config.json").write_text("{}")
    report, dense = streamed(source, tmp_path / "dense", IDS, 0.5)
    prune_streaming(source, tmp_path / "sparse", IDS, 0.5, weights_format="sparse", progress=False)
    index = json.loads((tmp_path / "sparse" / "model.safetensors.index.json").read_text())
    decoded = {}
    for shard in sorted(set(index["weight_map"].values())):
        decoded.update(read_weights(tmp_path / "sparse" / shard))
    assert all(torch.equal(decoded[k], dense[k]) for k in decoded) and decoded.keys() == dense.keys()
    assert (tmp_path / "dense" / "tokenizer_config.json").is_file()
    assert not (tmp_path / "dense" / ".secateurs-stream").exists()
    assert [t.index for t in report.blocks] == [0, 1, 2] and report.step_seconds().keys() >= {"read", "prune"}


KILLER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from secateurs.streaming import prune_streaming
    ids = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(0))
    def on_block(timing):
        if timing.index + 1 == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
    prune_streaming(sys.argv[1], sys.argv[2], ids, 0.5, method="sparsegpt", progress=False, on_block=on_block)
    """
)


def _shard(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


def test_resume_after_sigkill_gives_the_same_tensors(tmp_path):
    source = saved(tiny_llama(layers=4), tmp_path / "model")
    killed = subprocess.run([sys.executable, "-c", KILLER, str(source), str(tmp_path / "out"), "2"], check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    report = prune_streaming(source, tmp_path / "out", IDS, 0.5, method="sparsegpt", progress=False)
    assert report.resumed_from == 2 and [t.index for t in report.blocks] == [2, 3]
    prune_streaming(source, tmp_path / "whole", IDS, 0.5, method="sparsegpt", progress=False)
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "out").iterdir())
    for name in files:  # safetensors orders metadata keys differently in each process: compare contents
        if name.endswith(".safetensors"):
            (meta, resumed), (expected_meta, whole) = _shard(tmp_path / "out" / name), _shard(tmp_path / "whole" / name)
            assert meta == expected_meta and resumed.keys() == whole.keys(), name
            assert all(torch.equal(resumed[k], whole[k]) for k in whole), name
        else:
            assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_resume_refuses_other_settings(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")

    def stop(timing):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune_streaming(source, tmp_path / "out", IDS, 0.5, progress=False, on_block=stop)
    with pytest.raises(ResumeError, match="resume=False"):
        prune_streaming(source, tmp_path / "out", IDS, 0.6, progress=False)
    report = prune_streaming(source, tmp_path / "out", IDS, 0.6, progress=False, resume=False)
    assert report.resumed_from == 0


def test_max_memory_refuses_before_any_work(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    with pytest.raises(MemoryBudgetError, match="num_samples.*seq_len.*bf16.*sparsegpt") as error:
        prune_streaming(source, tmp_path / "out", IDS, 0.5, method="sparsegpt", max_memory="100KB")
    assert "statistics" in str(error.value) and "activations" in str(error.value)
    assert not (tmp_path / "out").exists()
    report = prune_streaming(source, tmp_path / "out", IDS, 0.5, max_memory="8GB", progress=False)
    assert 0 < report.memory.peak < 8 * 2**30


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"method": "taylor"}, UnsupportedOperationError, "gradients"),
        ({"scope": "global"}, PruningError, "one block at a time"),
        ({"max_memory": "lots"}, MemoryBudgetError, "4GB"),
        ({"activations_dtype": "bf16"}, PruningError, "torch.bfloat16"),
    ],
)
def test_bad_requests_are_refused(tmp_path, options, error, match):
    source = saved(tiny_llama(), tmp_path / "model")
    with pytest.raises(error, match=match):
        prune_streaming(source, tmp_path / "out", IDS, 0.5, **options)


def test_refuses_checkpoints_and_outputs_it_cannot_use(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        prune_streaming(tmp_path / "empty", tmp_path / "out", IDS, 0.5)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="safetensors"):
        prune_streaming(tmp_path / "empty", tmp_path / "out", IDS, 0.5)
    source = saved(tiny_llama(), tmp_path / "model")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ResumeError, match="empty or new out_dir"):
        prune_streaming(source, tmp_path / "busy", IDS, 0.5, progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_progress_lines_when_not_a_terminal(tmp_path, capsys):
    source = saved(tiny_llama(layers=2), tmp_path / "model")
    prune_streaming(source, tmp_path / "out", IDS, 0.5)
    err = capsys.readouterr().err
    assert "block 1/2" in err and "block 2/2" in err and "forward" in err


def test_needs_streaming_compares_the_in_memory_peak_with_memory(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    assert not needs_streaming(source) and needs_streaming(source, available=1000)
    assert in_memory_peak(10**9) > 3 * 10**9
    assert needs_streaming(28 * 10**9, available=24 * 10**9)
    assert not needs_streaming(10**8, available=24 * 10**9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blocks_run_on_the_gpu_and_match_in_memory(tmp_path):
    source = saved(tiny_llama(), tmp_path / "model")
    _, got = streamed(source, tmp_path / "out", IDS, 0.5, method="wanda", device="cuda")
    expected = in_memory(source, IDS, 0.5, method="wanda", device="cuda")
    assert all(torch.equal(got[k] == 0, expected[k] == 0) for k in expected)


def test_non_finite_weights_are_refused_once_read(tmp_path):
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    source = saved(model, tmp_path / "model")
    with pytest.raises(PruningError, match="up_proj"):
        prune_streaming(source, tmp_path / "out", IDS, 0.5, progress=False)
