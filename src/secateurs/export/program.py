"""``torch-export``: the model as a ``torch.export`` program (``.pt2``), graph and weights in one file that
``torch.export.load`` opens without secateurs or the model's code. The same traced program feeds the ONNX
exporter (:mod:`secateurs.export.onnx_format`).

Tracing keeps the batch size (and the length of token inputs) free where the model allows it, so the file
runs on other batch sizes than the example's; where the model fixes them, or the free trace fails, the
example's shapes are kept and the report says why.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from secateurs.export.formats import Check, ExportError, ExportFormat, Written, register_format
from secateurs.export.prepare import (
    call_text,
    dynamic_shapes,
    float_bound,
    max_abs_diff,
    reference_outputs,
    split_inputs,
    widened,
    without_cache,
)
from secateurs.runtime import Inputs, call_model, inference

PROGRAM_FILE = "model.pt2"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_CALL_SITE = re.compile(r'The following call raised this error:\s+File "([^"]+)", line (\d+)')
_MAX_REASON = 300


def exporter_reason(exc: BaseException) -> str:
    """The exporter's reason for failing, on one line: the summary torch's exporters print (the innermost
    error), else the first line of the message, with the line of model code that raised it when known."""
    text = _ANSI.sub("", str(exc))
    summary = re.search(r"## Exception summary\s+(.+)", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = summary.group(1).strip() if summary else (lines[0] if lines else type(exc).__name__)
    reason = _CLASS.sub(r"\1", reason)
    if not summary and not reason.startswith(type(exc).__name__):
        reason = f"{type(exc).__name__}: {reason}"
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    site = _CALL_SITE.search(text)
    return f"{reason} (at {Path(site.group(1)).name}:{site.group(2)})" if site else reason


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters' progress lines and graph dumps kept off the terminal (their reason reaches the error)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _export(model: nn.Module, inputs: Inputs, free: bool) -> torch.export.ExportedProgram:
    traced = widened(inputs) if free else inputs
    args, kwargs = split_inputs(traced)
    shapes = dynamic_shapes(model, traced) if free else None
    with quiet_exporter(), inference(model), without_cache(model):
        return torch.export.export(model, args, kwargs, dynamic_shapes=shapes, strict=False)


def trace_program(
    model: nn.Module, inputs: Inputs, *, dynamic: bool = True
) -> tuple[torch.export.ExportedProgram, list[str]]:
    """``torch.export`` of ``model`` on ``inputs``, with free batch (and token) sizes when ``dynamic``; falls back
    to the example's shapes when the free trace fails. Returns the program and notes for the report; raises
    :class:`ExportError` with the exporter's reason on one line when no trace succeeds."""
    notes = []
    if dynamic:
        try:
            return _export(model, inputs, free=True), notes
        except Exception as exc:  # noqa: BLE001 - any exporter failure: retry with fixed shapes, then report it
            notes.append(
                f"shapes fixed to the example input's: a trace with free batch size failed ({exporter_reason(exc)})"
            )
    try:
        return _export(model, inputs, free=False), notes
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; each becomes one line
        raise ExportError(f"torch.export cannot trace {type(model).__name__}: {exporter_reason(exc)}") from exc


def input_note(program: torch.export.ExportedProgram) -> str:
    """Which input dimensions the program leaves free (``input_ids dim 0, 1``), for the report."""
    free = []
    for node in program.graph.nodes:
        shape = getattr(node.meta.get("val"), "shape", ()) if node.op == "placeholder" else ()
        dims = [str(index) for index, size in enumerate(shape) if isinstance(size, torch.SymInt)]
        if dims:
            free.append(f"{node.name} dim {', '.join(dims)}")
    return f"free input sizes: {'; '.join(free)}" if free else "input shapes fixed to the example input's"


@register_format("torch-export")
@dataclass
class TorchExport(ExportFormat):
    summary = "a torch.export program (.pt2): graph and weights in one file, loaded with torch.export.load"
    #: Keep the batch size (and token length) free where the model allows it.
    dynamic: bool = True

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        program, notes = trace_program(model, example_inputs, dynamic=self.dynamic)
        torch.export.save(program, directory / PROGRAM_FILE)
        loaded = torch.export.load(directory / PROGRAM_FILE).module()
        with torch.no_grad():
            diff, scale = max_abs_diff(reference_outputs(model, example_inputs), call_model(loaded, example_inputs))
        check = Check(diff, scale, float_bound(scale))
        if diff > check.bound:
            raise ExportError(
                f"the torch.export program differs from the model by {diff:.3g} (bound {check.bound:.3g})"
            )
        load = (
            f"import torch\nprogram = torch.export.load({PROGRAM_FILE!r}).module()\n"
            f"outputs = {call_text('program', example_inputs)}"
        )
        return Written({PROGRAM_FILE: load}, check, [*notes, input_note(program)])

    def load(self, directory: Path, threads: int | None = None) -> nn.Module:
        return torch.export.load(directory / PROGRAM_FILE).module()
