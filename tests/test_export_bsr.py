"""The ``bsr`` export format: folded weights plus plain-PyTorch lines that convert the layers the swap found
faster; the lines run without secateurs and rebuild what the masked model computes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.export import (
    BlockSparse,
    SparseLinear,
    UnsupportedFormatError,
    available_formats,
    export,
    load_block_sparse,
    read_export_manifest,
)
from secateurs.measure import Latency, LatencyComparison, LatencyRatio

def fixed_timer(ms: Mapping[str, float]):
    """Answers ``ms[name]`` (1 ms when not given) for every model, without running any: no timing is asserted."""

    def timer(models, inputs, threads, budget_s) -> LatencyComparison:
        latencies = {name: Latency(ms.get(name, 1.0), 0.0, 3, 3, threads) for name in models}
        reference = latencies[next(iter(models))].median_ms
        ratios = {name: LatencyRatio(latency.median_ms / reference, 0.0) for name, latency in latencies.items()}
        return LatencyComparison(next(iter(models)), latencies, ratios, threads, 3)

    return timer


#: BSR beats CSR beats dense: each layer takes the fastest kernel it can run.
SPARSE_WINS = BlockSparse(timer=fixed_timer({"dense": 2.0, "bsr": 1.0, "csr": 1.5, "block-sparse": 1.0}))
#: Dense wins everywhere.
DENSE_WINS = BlockSparse(timer=fixed_timer({"dense": 1.0, "bsr": 2.0, "csr": 2.0}))

ARCHITECTURE = "nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))"


def architecture() -> nn.Module:
    return eval(ARCHITECTURE, {"nn": nn}).eval()  # the same text the subprocess builds the model from


def block_pruned() -> nn.Module:
    torch.manual_seed(0)
    model = architecture()
    sc.prune(model, 0.75, granularity="block:16", include="0.*")
    sc.prune(model, 0.5, granularity="unstructured", include="2.*")
    return model


def example() -> tuple[torch.Tensor]:
    return (torch.randn(4, 64, generator=torch.Generator().manual_seed(1)),)


def test_bsr_is_a_registered_format():
    assert "bsr" in available_formats()


def test_forced_conversion_round_trips_to_the_masked_models_outputs(tmp_path):
    model = block_pruned()
    report = export(model, tmp_path / "out", SPARSE_WINS, example_inputs=example())
    details = read_export_manifest(tmp_path / "out").formats["bsr"].details
    assert details["converted"] == {"0": [16, 16], "2": None}  # tiles as BSR, unstructured zeros as CSR
    assert [layer["layout"] for layer in details["swap"]["layers"]] == ["bsr", "csr", "dense"]  # the last: no zeros
    assert report["bsr"].check.max_abs_diff <= report["bsr"].check.bound
    loaded = load_block_sparse(architecture(), tmp_path / "out")
    assert isinstance(loaded[0], SparseLinear) and loaded[0].layout == "bsr" and loaded[2].layout == "csr"
    with torch.no_grad():
        torch.testing.assert_close(loaded(*example()), model(*example()), rtol=1e-5, atol=1e-5)
    assert sc.is_pruned(model)  # the caller's model is left as it was


def test_the_manifest_lines_rebuild_the_fast_model_without_secateurs(tmp_path):
    model = block_pruned()
    export(model, tmp_path / "out", SPARSE_WINS, example_inputs=example())
    torch.save({"x": example()[0], "y": model(*example()).detach()}, tmp_path / "expected.pt")
    lines = read_export_manifest(tmp_path / "out").formats["bsr"].files["model.bsr.safetensors"].load
    script = f"import sys\nimport torch\nfrom torch import nn\nmodel = {ARCHITECTURE}.eval()\n{lines}\n" + textwrap.dedent(
        """
        expected = torch.load("../expected.pt")
        with torch.no_grad():
            torch.testing.assert_close(model(expected["x"]), expected["y"], rtol=1e-5, atol=1e-5)
        assert model[0].weight.layout == torch.sparse_bsr and model[2].weight.layout == torch.sparse_csr
        assert not any(name.startswith("secateurs") for name in sys.modules), "secateurs was imported"
        print("rebuilt")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "out", capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "rebuilt"


def test_hf_conv1d_layers_and_tied_weights_load_with_the_same_lines(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=1, n_head=4)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    sc.prune(model, 0.5, granularity="block:16", include="transformer.h.*")
    ids = {"input_ids": torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(2))}
    export(model, tmp_path / "out", SPARSE_WINS, example_inputs=ids)
    written = read_export_manifest(tmp_path / "out").formats["bsr"]
    assert written.details["strict"] is False  # the LM head's weight is the token embedding's, stored once
    assert set(written.details["converted"]) == {f"transformer.h.0.{name}" for name in
                                                 ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}  # fmt: skip
    monkeypatch.chdir(tmp_path / "out")
    namespace = {"model": transformers.GPT2LMHeadModel(config).eval()}
    exec(written.files["model.bsr.safetensors"].load, namespace)  # noqa: S102 - the manifest's own lines
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"](**ids).logits, model(**ids).logits, rtol=1e-4, atol=1e-5)


def test_layers_no_kernel_speeds_up_stay_dense_and_the_note_says_so(tmp_path):
    model = block_pruned()
    report = export(model, tmp_path / "out", DENSE_WINS, example_inputs=example())
    assert report["bsr"].details["converted"] == {}
    assert any("no layer faster: kept dense" in note for note in report["bsr"].notes)
    reasons = [layer["reason"] for layer in report["bsr"].details["swap"]["layers"]]
    assert all("below min_speedup" in reason for reason in reasons[:2]) and reasons[2] == "no zeros"
    loaded = load_block_sparse(architecture(), tmp_path / "out")
    assert not any(isinstance(module, SparseLinear) for module in loaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded(*example()), model(*example()))


def test_a_model_without_linear_layers_is_refused_before_any_work(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3)).eval()
    with pytest.raises(UnsupportedFormatError, match="bsr format converts Linear layers.*safetensors"):
        export(model, tmp_path / "out", "bsr", example_inputs=(torch.randn(1, 3, 8, 8),))
    assert not (tmp_path / "out").exists()


def test_bench_loads_the_fast_model_from_the_exports_source(tmp_path):
    (tmp_path / "blocky.py").write_text(textwrap.dedent(f"""
        import torch
        from torch import nn
        import secateurs as sc

        def build():
            torch.manual_seed(0)
            model = {ARCHITECTURE}.eval()
            sc.prune(model, 0.75, granularity="block:16", include="0.*")
            sc.finalize(model)
            model.input_shape = (4, 64)
            return model
    """))
    spec = f"python:{tmp_path / 'blocky.py'}:build"
    export(spec, tmp_path / "out", SPARSE_WINS)
    assert json.loads((tmp_path / "out" / "export.json").read_text())["formats"]["bsr"]["details"]["converted"] == {
        "0": [16, 16]
    }
    loaded = BlockSparse().load(tmp_path / "out")
    assert isinstance(loaded[0], SparseLinear) and type(loaded[2]) is nn.Linear


def test_an_export_made_from_a_module_leaves_the_architecture_to_the_caller(tmp_path):
    export(block_pruned(), tmp_path / "out", SPARSE_WINS, example_inputs=example())
    assert BlockSparse().load(tmp_path / "out") is None
