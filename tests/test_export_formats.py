"""The export API and the formats that need no optional package: masks folded, torch.export round trip,
plain safetensors, the manifest, checks before any work, and atomic output."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from torch import nn

import secateurs as sc
from secateurs.export import (
    ExportError,
    ExportFormat,
    UnsupportedFormatError,
    Written,
    available_formats,
    deployable_copy,
    export,
    get_format,
    read_export_manifest,
    register_format,
)
from secateurs.export import formats as export_formats
from secateurs.storage import OutputExistsError


def masked_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    sc.prune(model, 0.5)
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_formats_of_the_issue_are_registered():
    assert {"hf", "torch-export", "safetensors", "onnx", "onnx-int8", "int8"} <= set(available_formats())


def test_deployable_copy_folds_masks_and_leaves_the_model_alone():
    model = masked_mlp()
    folded = deployable_copy(model)
    assert sc.is_pruned(model) and not sc.is_pruned(folded)
    assert not any(name.endswith("_mask") for name, _ in folded.named_buffers())
    assert not folded[0]._forward_pre_hooks
    assert torch.equal(folded[0].weight, model[0].weight) and int((folded[0].weight == 0).sum()) == 64


def test_safetensors_holds_the_folded_state_dict(tmp_path):
    model = masked_mlp()
    report = export(model, tmp_path / "out", "safetensors")
    state = safetensors.torch.load_file(tmp_path / "out" / "model.safetensors")
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert int((state["0.weight"] == 0).sum()) == 64
    assert report["safetensors"].check.max_abs_diff == 0.0
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    fresh.load_state_dict(state)  # a plain architecture takes it: no mask keys


def test_torch_export_round_trip_keeps_the_batch_size_free(tmp_path):
    model, x = masked_mlp(), torch.randn(1, 8)
    before = snapshot(model)
    report = export(model, tmp_path / "out", ["torch-export"], example_inputs=(x,))
    program = torch.export.load(tmp_path / "out" / "model.pt2").module()
    other = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(program(x), model(x))
        assert torch.allclose(program(other), model(other), atol=1e-6)
    assert "dim 0" in " ".join(report["torch-export"].notes)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and sc.is_pruned(model)


def test_manifest_states_how_to_load_every_file(tmp_path):
    export(masked_mlp(), tmp_path / "out", "torch-export,safetensors", example_inputs=(torch.randn(2, 8),))
    manifest = read_export_manifest(tmp_path / "out")
    loads = {path: file.load for fmt in manifest.formats.values() for path, file in fmt.files.items()}
    assert "torch.export.load('model.pt2')" in loads["model.pt2"]
    assert "safetensors.torch.load_file('model.safetensors')" in loads["model.safetensors"]
    raw = json.loads((tmp_path / "out" / "export.json").read_text())
    assert raw["inputs"] == [{"name": "input_0", "shape": [2, 8], "dtype": "float32"}]
    assert raw["formats"]["torch-export"]["check"]["max_abs_diff"] == 0.0


def test_refusals_come_before_any_work(tmp_path):
    model = masked_mlp()
    with pytest.raises(UnsupportedFormatError, match="unknown export format 'onxx'"):
        export(model, tmp_path / "a", ["onxx"])
    with pytest.raises(UnsupportedFormatError, match="hf format saves Hugging Face transformers models"):
        export(model, tmp_path / "b", ["safetensors", "hf"], example_inputs=(torch.randn(1, 8),))
    with pytest.raises(UnsupportedFormatError, match="pass example_inputs="):
        export(model, tmp_path / "c", ["torch-export"])
    assert not any(tmp_path.iterdir())


class Failing(ExportFormat):
    """Writes a file, then fails, as an exporter may half-way."""

    needs_inputs = False

    def write(self, model, example_inputs, directory):
        (directory / "partial.bin").write_bytes(b"half")
        raise RuntimeError("the exporter gave up\nwith a long story")


@pytest.fixture
def scratch_registry(monkeypatch):
    """Formats registered by a test disappear after it."""
    monkeypatch.setattr(export_formats, "_FORMATS", dict(export_formats._FORMATS))


def test_a_failing_format_leaves_no_partial_output(tmp_path, scratch_registry):
    register_format("failing-for-test")(Failing)
    with pytest.raises(ExportError, match="^failing-for-test: RuntimeError: the exporter gave up$"):
        export(masked_mlp(), tmp_path / "out", ["safetensors", "failing-for-test"])
    assert not any(tmp_path.iterdir())
    export(masked_mlp(), tmp_path / "out", ["safetensors"])
    with pytest.raises(ExportError):
        export(masked_mlp(), tmp_path / "out", ["failing-for-test"], overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "model.safetensors"]


def test_an_export_directory_is_replaced_only_with_overwrite(tmp_path):
    export(masked_mlp(), tmp_path / "out", ["safetensors"])
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        export(masked_mlp(), tmp_path / "out", ["safetensors"])
    export(masked_mlp(), tmp_path / "out", ["safetensors"], overwrite=True)


def test_a_registered_format_is_one_small_class(tmp_path, scratch_registry):
    @register_format("state-pt-for-test")
    class StatePt(ExportFormat):
        needs_inputs = False

        def write(self, model, example_inputs, directory):
            torch.save(model.state_dict(), directory / "state.pt")
            return Written({"state.pt": "torch.load('state.pt', weights_only=True)"})

    assert isinstance(get_format("state-pt-for-test"), StatePt)
    report = export(masked_mlp(), tmp_path / "out", ["state-pt-for-test"])
    assert report["state-pt-for-test"].files["state.pt"] > 0
