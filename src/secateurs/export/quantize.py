"""Prune, then quantize: int8 weights by two routes, zeros kept as zeros.

* ``onnx-int8`` (the durable route): the ONNX export quantized by onnxruntime's dynamic quantization,
  int8 weights for MatMul/Gemm (Linear layers) and, by default, the embedding tables (Gather), which hold
  half of a small encoder's weights. Weights are symmetric, so a zero weight is exactly 0, one scale per
  output channel, and 7-bit by default (``reduce_range``), which keeps AVX2 CPUs' int8 kernels from saturating.
* ``int8``: PyTorch's eager dynamic quantization (``torch.ao.quantization.quantize_dynamic``) of the Linear
  layers (Hugging Face ``Conv1D`` layers are turned into Linear first) and of a Hugging Face model's input
  embedding table, per channel by default, saved as TorchScript: the one form in which a model with
  eager-quantized layers loads without its code (``torch.jit.load``; the ``torch.export`` tracer does not take
  their packed weights). torch deprecates both APIs and announces their removal: the format is refused, with
  the reason, on a torch that no longer has them.

Activations are quantized per batch at run time (dynamic quantization), so no calibration data is needed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.core.targets import is_hf_conv1d
from secateurs.export.formats import Check, ExportError, ExportFormat, UnsupportedFormatError, Written, register_format
from secateurs.export.onnx_format import (
    ONNX_FILE,
    ONNX_PACKAGES,
    OrtModule,
    compare_with_session,
    load_snippet,
    needs_side_file,
    ort_session,
    write_onnx,
)
from secateurs.export.prepare import call_text, max_abs_diff, reference_outputs, split_inputs, without_cache
from secateurs.runtime import Inputs, call_model

ONNX_INT8_FILE = "model.int8.onnx"
TORCHSCRIPT_INT8_FILE = "model.int8.pt"
#: Deprecation warnings of the eager route, checked by message: shown once in the report, not per call.
_DEPRECATIONS = (
    r"torch\.ao\.quantization is deprecated",
    r".*quantized tensor creation functions.*deprecated",
    r"`torch\.jit\.\w+` is deprecated",
)
#: Tracing reads every property of every module, deprecated ones included, though the model never calls them.
_READ_BY_TRACING = (r"`is_gradient_checkpointing` is deprecated",)
_EAGER_NOTE = "torch.ao.quantization and TorchScript are deprecated in torch; onnx-int8 is the durable int8 route"


@contextlib.contextmanager
def _known_deprecations_hidden() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message)
        yield


def eager_quantization() -> Any:
    """``torch.ao.quantization``, or :class:`UnsupportedFormatError` saying it is gone and what to use instead."""
    try:
        with _known_deprecations_hidden():
            module = importlib.import_module("torch.ao.quantization")
    except ImportError:
        module = None
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if module is None or not hasattr(module, "quantize_dynamic") or not hasattr(torch.jit, "trace") or not engines:
        raise UnsupportedFormatError(
            f"the int8 format needs torch.ao.quantization.quantize_dynamic, TorchScript and a quantized engine, "
            f"which torch {torch.__version__} lacks here; use formats='onnx-int8' (onnxruntime's quantization)"
        )
    return module


def linear_from_conv1d(model: nn.Module) -> nn.Module:
    """Hugging Face ``Conv1D`` layers (GPT-2) replaced in place by the ``nn.Linear`` they compute, so that
    quantization finds them."""
    for name, module in list(model.named_modules()):
        if is_hf_conv1d(module):
            linear = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(module.weight.t())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, linear)
    return model


def int8_zero_weights(model: nn.Module) -> int:
    """Zeros among the int8 Linear weights of a model quantized by ``quantize_dynamic`` (symmetric: a zero is 0)."""
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and type(module).__module__.startswith("torch.ao.nn.quantized"):
            values = weight()
            if values.dtype == torch.qint8:
                total += int((values.int_repr() == 0).sum())
    return total


def _qconfigs(quantization: Any, model: nn.Module, per_channel: bool, embeddings: bool) -> dict[Any, Any]:
    """What to quantize: every Linear layer, and the input embedding table of a Hugging Face model."""
    linear = quantization.per_channel_dynamic_qconfig if per_channel else quantization.default_dynamic_qconfig
    spec: dict[Any, Any] = {nn.Linear: linear}
    table = model.get_input_embeddings() if embeddings and hasattr(model, "get_input_embeddings") else None
    if isinstance(table, nn.Embedding):
        name = next(name for name, module in model.named_modules() if module is table)
        spec[name] = quantization.float_qparams_weight_only_qconfig
    return spec


def _trace(model: nn.Module, inputs: Inputs) -> tuple[Any, list[str]]:
    """TorchScript of ``model`` traced on ``inputs``, and a note when the tracer fixed Python values (its
    TracerWarnings, gathered into one note rather than printed one by one)."""
    args, kwargs = split_inputs(inputs)
    if args and kwargs:
        raise ExportError("TorchScript traces positional or keyword inputs, not both; give example_inputs of one kind")
    with warnings.catch_warnings(record=True) as caught, torch.no_grad(), without_cache(model):
        warnings.simplefilter("always", torch.jit.TracerWarning)
        for message in _READ_BY_TRACING:
            warnings.filterwarnings("ignore", message=message)
        traced = torch.jit.trace(
            model, args or None, example_kwarg_inputs=kwargs or None, strict=False, check_trace=False
        )
    fixed = 0
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            fixed += 1
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    note = (
        f"the TorchScript tracer fixed {fixed} Python value(s) of the forward pass: exact for inputs shaped like "
        "the example's, other shapes may not follow the model"
    )
    return traced, [note] if fixed else []


@register_format("int8")
@dataclass
class TorchInt8(ExportFormat):
    summary = "int8 Linear weights (torch.ao quantize_dynamic), TorchScript file; deprecated APIs, see onnx-int8"
    #: One scale per output channel instead of one per tensor: on MiniLM pruned 50% by Wanda, STS 86.49 against
    #: 86.13 per tensor (fp32: 86.70).
    per_channel: bool = True
    #: Also quantize the input embedding table (``get_input_embeddings()``, 8 bits per row), half of a small
    #: encoder's weights. The other tables stay fp32: torch's quantized embedding needs contiguous indices,
    #: which buffers such as BERT's token types are not.
    embeddings: bool = True

    def check(self, model: nn.Module) -> None:
        eager_quantization()
        if not any(isinstance(m, nn.Linear) or is_hf_conv1d(m) for m in model.modules()):
            raise UnsupportedFormatError(
                f"the int8 format quantizes Linear layers and {type(model).__name__} has none; "
                "choose another format: formats='onnx' (or torch-export)"
            )

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        quantization = eager_quantization()
        path = directory / TORCHSCRIPT_INT8_FILE
        with _known_deprecations_hidden():
            quantized = linear_from_conv1d(copy.deepcopy(model))
            spec = _qconfigs(quantization, quantized, self.per_channel, self.embeddings)
            quantization.quantize_dynamic(quantized, spec, dtype=torch.qint8, inplace=True)
            traced, notes = _trace(quantized, example_inputs)
            traced.save(str(path))
            loaded = torch.jit.load(str(path))
            with torch.no_grad():
                diff, scale = max_abs_diff(reference_outputs(model, example_inputs), call_model(loaded, example_inputs))
        load = (
            f"import torch\nmodel = torch.jit.load({TORCHSCRIPT_INT8_FILE!r})  # TorchScript; CPU\n"
            f"outputs = {call_text('model', example_inputs)}  # Hugging Face models return a dict"
        )
        details = {"int8_zero_weights": int8_zero_weights(quantized)}
        return Written({TORCHSCRIPT_INT8_FILE: load}, Check(diff, scale), [*notes, _EAGER_NOTE], details)

    def load(self, directory: Path, threads: int | None = None) -> nn.Module:
        with _known_deprecations_hidden():
            return torch.jit.load(str(directory / TORCHSCRIPT_INT8_FILE))


@contextlib.contextmanager
def _preprocessing_advice_hidden() -> Iterator[None]:
    """onnxruntime advises shape-inference preprocessing on the root logger; dynamic quantization of MatMul,
    Gemm and Gather weights does not need it."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _at_zero_point(weights: Any, zero_point: Any) -> int:
    """How many quantized weights equal their zero point. Symmetric weights have one zero point, 0, however
    many channels; per-channel zero points of asymmetric weights lie along the last matching axis (MatMul's)."""
    if zero_point.size > 1 and (zero_point != zero_point.flat[0]).any():
        axis = max(i for i, size in enumerate(weights.shape) if size == zero_point.size)
        zero_point = zero_point.reshape([-1 if i == axis else 1 for i in range(weights.ndim)])
    else:
        zero_point = zero_point.flat[0]
    return int((weights == zero_point).sum())


def onnx_int8_zero_weights(path: Path) -> int:
    """Zeros among the int8 weights of a quantized ONNX file: quantized values equal to their zero point."""
    import onnx
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    points = {name.removesuffix("_zero_point"): array for name, array in values.items() if name.endswith("_zero_point")}
    return sum(
        _at_zero_point(array, points[name.removesuffix("_quantized")])
        for name, array in values.items()
        if name.endswith("_quantized") and name.removesuffix("_quantized") in points
    )


@register_format("onnx-int8")
@dataclass
class OnnxInt8(ExportFormat):
    summary = "ONNX with int8 weights (onnxruntime dynamic quantization of Linear layers and embeddings)"
    requires = ONNX_PACKAGES
    dynamic: bool = True
    #: Quantize embedding tables (Gather) too, not only Linear layers (MatMul, Gemm).
    embeddings: bool = True
    #: One scale per output channel instead of one per tensor: on MiniLM pruned 50% by Wanda, STS 86.50 against
    #: 84.78 per tensor (fp32: 86.70), for 0.5% more bytes.
    per_channel: bool = True
    #: 7-bit weights: x86 CPUs without VNNI multiply uint8 activations by int8 weights in int16 pairs, which
    #: saturate with 8-bit weights (13% error on a 2048-wide Linear here, 1% with 7 bits, at the same speed).
    reduce_range: bool = True

    def _quantize(self, source: Path, target: Path, side_file: bool) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _preprocessing_advice_hidden():
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=self.per_channel,
                reduce_range=self.reduce_range,
                op_types_to_quantize=["MatMul", "Gemm", *(["Gather"] if self.embeddings else [])],
                use_external_data_format=side_file,
                extra_options={"WeightSymmetric": True},
            )

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        notes: list[str] = []
        with tempfile.TemporaryDirectory(dir=directory, prefix=".onnx-") as scratch:
            source = directory / ONNX_FILE  # the onnx format's file when it was asked for too
            if not source.is_file():
                source = Path(scratch) / ONNX_FILE
                notes = write_onnx(model, example_inputs, source, dynamic=self.dynamic)[1]
            self._quantize(source, directory / ONNX_INT8_FILE, needs_side_file(model))
        path = directory / ONNX_INT8_FILE
        diff, scale = compare_with_session(path, model, example_inputs)
        files = sorted(p.name for p in directory.iterdir() if p.name.startswith(ONNX_INT8_FILE))
        snippet = load_snippet(ONNX_INT8_FILE, ort_session(path))
        details = {"int8_zero_weights": onnx_int8_zero_weights(path)}
        return Written(
            {name: snippet if name == ONNX_INT8_FILE else "weights of model.int8.onnx" for name in files},
            Check(diff, scale),
            notes,
            details,
        )

    def load(self, directory: Path, threads: int | None = None) -> nn.Module:
        return OrtModule(ort_session(directory / ONNX_INT8_FILE, threads))
