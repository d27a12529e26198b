"""ONNX through onnxruntime, and int8 after pruning by both routes: outputs equal (float) or close (int8),
zeros kept, exporter failures as one line."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.demo.model import DemoCNN
from secateurs.export import ExportError, OnnxInt8, export
from secateurs.structural import shrink

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.xdist_group("onnx")


def cnn() -> DemoCNN:
    torch.manual_seed(0)
    return DemoCNN((1, 8, 8), num_classes=10, width=8).eval()


def images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_masked_cnn_runs_the_same_in_onnxruntime_at_any_batch_size(tmp_path):
    model = cnn()
    sc.prune(model, 0.6)
    report = export(model, tmp_path / "out", ["onnx"], example_inputs=(images(1),))
    check = report["onnx"].check
    assert check.max_abs_diff <= check.bound == pytest.approx(1e-4 * max(1.0, check.scale))
    with torch.no_grad():
        for batch in (1, 7):
            np.testing.assert_allclose(
                run_onnx(tmp_path / "out" / "model.onnx", images(batch)), model(images(batch)).numpy(), atol=1e-5
            )
    onnx.checker.check_model(str(tmp_path / "out" / "model.onnx"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "model.onnx"]  # one file


def test_shrunk_cnn_runs_the_same_in_onnxruntime(tmp_path):
    model, x = cnn(), images(2)
    shrink(model, x, amount=0.5)
    report = export(model, tmp_path / "out", ["onnx"], example_inputs=(x,))
    assert report["onnx"].check.max_abs_diff <= 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(tmp_path / "out" / "model.onnx", x), model(x).numpy(), atol=1e-5)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # a Python branch on a value: no exporter can trace it
            return x * 2
        return x


def test_an_exporter_failure_is_one_line_with_its_reason_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError) as caught:
        export(DataDependent(), tmp_path / "out", ["onnx"], example_inputs=(torch.randn(2, 3),))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("onnx: torch.export cannot trace DataDependent")
    assert "data-dependent" in message and "test_export_onnx.py" in message
    assert not any(tmp_path.iterdir())


def pruned_mlp() -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    sc.prune(model, 0.5, include_output=True)
    return model, sum(int((m.weight == 0).sum()) for m in model if isinstance(m, nn.Linear))


def onnx_int8_zeros(path) -> int:
    """Zeros of every int8 weight initializer of a quantized ONNX file (symmetric: the zero point is 0)."""
    arrays = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    return sum(int((a == 0).sum()) for a in arrays if a.dtype == np.int8 and a.ndim == 2)


def torchscript_int8_zeros(path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))
    zeros = 0
    for _, sub in module.named_modules():
        if sub.original_name == "LinearPackedParams":
            weight, _ = torch.ops.quantized.linear_unpack(sub._packed_params)
            zeros += int((weight.int_repr() == 0).sum())
    return zeros


def test_zeros_stay_zeros_after_both_int8_routes(tmp_path):
    model, pruned = pruned_mlp()
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    report = export(model, tmp_path / "out", ["int8", OnnxInt8(embeddings=False)], example_inputs=(x,))
    assert torchscript_int8_zeros(tmp_path / "out" / "model.int8.pt") == pruned
    assert onnx_int8_zeros(tmp_path / "out" / "model.int8.onnx") == pruned
    for name in ("int8", "onnx-int8"):
        check = report[name].check
        assert report[name].details["int8_zero_weights"] == pruned
        assert check.bound is None and check.relative < 0.05  # int8 rounding, reported not bounded
    with torch.no_grad():
        diff = np.abs(run_onnx(tmp_path / "out" / "model.int8.onnx", x) - model(x).numpy()).max()
    assert diff == pytest.approx(report["onnx-int8"].check.max_abs_diff, abs=1e-6)
