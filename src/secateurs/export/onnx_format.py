"""``onnx``: the model as one ONNX file from torch's current exporter (``torch.onnx.export(..., dynamo=True)``),
validated by ``onnx.checker`` and run by onnxruntime on the example inputs: the largest difference from
PyTorch is reported and must stay within :data:`~secateurs.export.prepare.RELATIVE_BOUND` of the output scale.

A model whose weights exceed protobuf's 2 GB limit keeps them in ``model.onnx.data`` beside the file; any
other model is one self-contained file. onnxruntime is run through :class:`OrtModule`, an ``nn.Module``
around an inference session, so that every timer and metric of secateurs takes it like a model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.export.formats import Check, ExportError, ExportFormat, Written, register_format
from secateurs.export.prepare import (
    float_bound,
    max_abs_diff,
    output_names,
    reference_outputs,
    split_inputs,
    tensor_leaves,
)
from secateurs.export.program import exporter_reason, input_note, quiet_exporter, trace_program
from secateurs.measure import denormal_setting_kept
from secateurs.runtime import Inputs

ONNX_FILE = "model.onnx"
#: Weights above this many bytes go to a side file: one protobuf message holds at most 2 GiB.
SINGLE_FILE_LIMIT = 2**31 - 2**27
ONNX_PACKAGES = (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime"))


def needs_side_file(model: nn.Module) -> bool:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) > SINGLE_FILE_LIMIT


@contextlib.contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """onnxscript's optimizer logs every constant it fails to fold; only its errors are worth showing."""
    logger = logging.getLogger("onnxscript")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_onnx(model: nn.Module, inputs: Inputs, path: Path, *, dynamic: bool = True) -> tuple[list[str], list[str]]:
    """Export ``model`` to ``path`` and validate it with ``onnx.checker``; returns the files written (names
    relative to ``path``'s folder) and notes. Raises :class:`ExportError` with the exporter's reason."""
    import onnx

    program, notes = trace_program(model, inputs, dynamic=dynamic)
    side_file = needs_side_file(model)
    try:
        with quiet_exporter(), _quiet_optimizer():
            torch.onnx.export(
                program,
                (),
                str(path),
                dynamo=True,
                external_data=side_file,
                verbose=False,
                output_names=output_names(reference_outputs(model, inputs)),
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; each becomes one line
        raise ExportError(f"the ONNX exporter cannot convert {type(model).__name__}: {exporter_reason(exc)}") from exc
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejects the exported model: {str(exc).splitlines()[0]}") from exc
    files = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return files, [*notes, input_note(program)]


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path``, quiet, denormals flushed, on ``threads`` intra-op threads
    (None: onnxruntime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    with denormal_setting_kept():  # the session would otherwise leave the caller's thread flushing denormals
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_feeds(session: Any, inputs: Inputs) -> dict[str, Any]:
    """The session's inputs from the model's: keyword inputs by name, else the input tensors in order."""
    names = [item.name for item in session.get_inputs()]
    args, kwargs = split_inputs(inputs)
    if kwargs and not args and all(name in kwargs for name in names):
        tensors = [kwargs[name] for name in names]
    else:
        tensors = tensor_leaves((args, kwargs))
        if len(tensors) != len(names):
            raise ExportError(
                f"the ONNX model takes {len(names)} inputs ({', '.join(names)}), given {len(tensors)} tensors"
            )
    return {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, tensors)}


def run_session(session: Any, inputs: Inputs) -> list[torch.Tensor]:
    return [torch.from_numpy(array) for array in session.run(None, session_feeds(session, inputs))]


class OrtModule(nn.Module):
    """An onnxruntime session as a module: called like the exported model, it returns the output tensors
    in order. Lets secateurs time and evaluate ONNX files as it does models."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def forward(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        return run_session(self.session, kwargs if kwargs and not args else args)


def compare_with_session(path: Path, model: nn.Module, inputs: Inputs) -> tuple[float, float]:
    """Largest difference between onnxruntime on ``path`` and ``model`` on ``inputs``, and the output scale."""
    with torch.no_grad():
        reference = reference_outputs(model, inputs)
    return max_abs_diff(reference, run_session(ort_session(path), inputs))


def load_snippet(path: str, session: Any) -> str:
    feeds = ", ".join(f"{item.name!r}: {item.name}" for item in session.get_inputs())
    return (
        f"import onnxruntime\nsession = onnxruntime.InferenceSession({path!r})\n"
        f"outputs = session.run(None, {{{feeds}}})  # numpy arrays"
    )


@register_format("onnx")
@dataclass
class Onnx(ExportFormat):
    summary = "one ONNX file (torch.onnx dynamo exporter), checked by onnx.checker and onnxruntime"
    requires = ONNX_PACKAGES
    dynamic: bool = True

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        files, notes = write_onnx(model, example_inputs, directory / ONNX_FILE, dynamic=self.dynamic)
        diff, scale = compare_with_session(directory / ONNX_FILE, model, example_inputs)
        check = Check(diff, scale, float_bound(scale))
        if diff > check.bound:
            raise ExportError(
                f"onnxruntime's outputs differ from PyTorch's by {diff:.3g}, more than the bound {check.bound:.3g}; "
                "an operator is converted inexactly: use formats='torch-export' instead, or report it to torch.onnx"
            )
        snippet = load_snippet(ONNX_FILE, ort_session(directory / ONNX_FILE))
        return Written(
            {name: snippet if name == ONNX_FILE else "weights of model.onnx, read with it" for name in files},
            check,
            notes,
        )

    def load(self, directory: Path, threads: int | None = None) -> nn.Module:
        return OrtModule(ort_session(directory / ONNX_FILE, threads))
