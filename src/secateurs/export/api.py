"""``export(model, out, formats=[...])``: a pruned model written in formats that load without secateurs.

Every check comes first (format names, optional packages, the output directory, whether the model can take
each format); then the model is copied with its masks folded in, every format writes into one temporary
directory and checks its own output, and the directory takes the name ``out`` only when all have succeeded:
a failure leaves nothing behind and the given model is never changed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.export.formats import (
    Check,
    ExportError,
    ExportFormat,
    UnsupportedFormatError,
    Written,
    check_packages,
    resolve_formats,
)
from secateurs.export.manifest import EXPORT_MANIFEST, ExportedFile, ExportedFormat, ExportManifest, TensorInfo
from secateurs.export.prepare import deployable_copy, output_names, reference_outputs, split_inputs
from secateurs.export.program import exporter_reason
from secateurs.runtime import Inputs
from secateurs.sources import LoadedModel, check_spec, load_model, portable_files
from secateurs.storage import SOURCE_FOLDER, OutputExistsError, WriteError, atomic_directory, check_output_dir
from secateurs.version import __version__

FormatSpec = str | ExportFormat
ModelSpec = nn.Module | LoadedModel | str | os.PathLike[str]


@dataclass(frozen=True)
class FormatReport:
    """One format of an export: its files (path relative to the export directory -> bytes), the Python that
    loads each, the check of its outputs, notes, and the seconds it took."""

    name: str
    files: dict[str, int]
    load: dict[str, str]
    check: Check | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "bytes": self.bytes, "load": self.load, "notes": self.notes, "details": self.details,
            "check": self.check.to_dict() if self.check else None, "seconds": self.seconds,
        }  # fmt: skip


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export` wrote: the directory, one :class:`FormatReport` per format, and ``export.json``."""

    path: Path
    formats: dict[str, FormatReport]
    manifest: ExportManifest

    def __getitem__(self, name: str) -> FormatReport:
        return self.formats[name]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "formats": {name: report.to_dict() for name, report in self.formats.items()}}


@dataclass(frozen=True)
class _Source:
    """The model to export with its example inputs, where it came from, and the files that go with it."""

    model: nn.Module
    inputs: Inputs | None
    info: dict[str, Any]
    files: dict[str, Path]


def _source_files(loaded: LoadedModel) -> dict[str, Path]:
    """Config and tokenizer files of the model's source: the copies saved beside a pruned model, else the source's."""
    if loaded.directory is not None and loaded.manifest is not None and loaded.manifest.source.files:
        return {name: loaded.directory / SOURCE_FOLDER / name for name in loaded.manifest.source.files}
    try:
        return portable_files(loaded.spec)
    except ValueError:
        return {}


def _source(model: ModelSpec, example_inputs: Inputs | None, input_shape: Sequence[int] | str | None) -> _Source:
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model), input_shape=input_shape)
    if isinstance(model, LoadedModel):
        info = {
            "spec": model.spec,
            "task": model.task,
            "directory": str(model.directory) if model.directory else None,
            "input_shape": list(model.input_shape) if model.input_shape else None,
        }
        inputs = model.example_inputs if example_inputs is None else example_inputs
        return _Source(model.model, inputs, info, _source_files(model))
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module, a LoadedModel or a model spec/directory, got {type(model).__name__}"
        )
    return _Source(model, example_inputs, {"class": f"{type(model).__module__}.{type(model).__qualname__}"}, {})


def _check_formats(formats: Sequence[ExportFormat], source: _Source) -> None:
    """Every format's own check, all before any work; the refusals together in one message."""
    problems = []
    for fmt in formats:
        if fmt.needs_inputs and source.inputs is None:
            problems.append(f"the {fmt.name} format runs the model: pass example_inputs=...")
            continue
        try:
            fmt.check(source.model)
        except UnsupportedFormatError as exc:
            problems.append(str(exc))
    if problems:
        raise UnsupportedFormatError("; ".join(problems))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _copy_source_files(files: Mapping[str, Path], folder: Path) -> None:
    """The source's tokenizer and config files into ``folder``, never over a file the format wrote."""
    for name, original in files.items():
        if original.is_file() and not (folder / name).exists():
            shutil.copyfile(original, folder / name)


def _write_format(fmt: ExportFormat, model: nn.Module, source: _Source, directory: Path) -> FormatReport:
    start = time.perf_counter()
    try:
        written: Written = fmt.write(model, source.inputs, directory)
    except ExportError as exc:
        raise type(exc)(f"{fmt.name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a library's failure inside a format becomes one line naming it
        raise ExportError(f"{fmt.name}: {exporter_reason(exc)}") from exc
    if fmt.source_files_into:
        _copy_source_files(source.files, directory / fmt.source_files_into)
    return FormatReport(
        fmt.name, {path: _size(directory / path) for path in written.files}, dict(written.files), written.check,
        written.notes, written.details, time.perf_counter() - start,
    )  # fmt: skip


def _input_infos(inputs: Inputs | None) -> list[TensorInfo]:
    if inputs is None:
        return []
    args, kwargs = split_inputs(inputs)
    named = {**{f"input_{i}": a for i, a in enumerate(args)}, **kwargs}
    return [
        TensorInfo(name=name, shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."))
        for name, t in named.items()
        if isinstance(t, torch.Tensor)
    ]


def _manifest(source: _Source, outputs: list[str], reports: Mapping[str, FormatReport]) -> ExportManifest:
    formats = {
        name: ExportedFormat(
            files={path: ExportedFile(bytes=size, load=report.load[path]) for path, size in report.files.items()},
            check=report.check.to_dict() if report.check else None, notes=report.notes, details=report.details,
            seconds=round(report.seconds, 3),
        )
        for name, report in reports.items()
    }  # fmt: skip
    return ExportManifest(
        secateurs_version=__version__, torch_version=torch.__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=source.info, inputs=_input_infos(source.inputs), outputs=outputs, formats=formats,
    )  # fmt: skip


def export(
    model: ModelSpec,
    out: str | os.PathLike[str],
    formats: FormatSpec | Sequence[FormatSpec] = ("safetensors",),
    *,
    example_inputs: Inputs | None = None,
    input_shape: Sequence[int] | str | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``model`` to the directory ``out`` in every format of ``formats``, atomically.

    ``model`` is a module (with ``example_inputs``: a tuple of positional or a dict of keyword arguments), a
    :class:`~secateurs.sources.LoadedModel`, or a model spec or pruned-model directory (loaded with
    :func:`secateurs.load_model`, ``input_shape`` choosing its example input). ``formats`` are names from
    :func:`available_formats` (``"hf"``, ``"torch-export"``, ``"safetensors"``, ``"onnx"``, ``"onnx-int8"``,
    ``"int8"``...; comma lists allowed) or configured instances such as ``Onnx(dynamic=False)``. Each file is
    checked against the model on the example inputs; ``out/export.json`` says how to load each without
    secateurs. Raises :class:`UnsupportedFormatError` before any work when a format cannot take the model,
    :class:`ExportError` (one line, the exporter's reason) when writing fails; nothing is left behind then.
    """
    chosen = resolve_formats(formats)
    for fmt in chosen:
        check_packages(fmt.name, fmt.requires)
    if isinstance(model, (str, os.PathLike)):
        check_spec(os.fspath(model), input_shape)
    check_output_dir(out, overwrite)
    source = _source(model, example_inputs, input_shape)
    _check_formats(chosen, source)
    folded = deployable_copy(source.model)
    outputs = output_names(reference_outputs(folded, source.inputs)) if source.inputs is not None else []
    try:
        with atomic_directory(out, overwrite) as temp:
            reports = {fmt.name: _write_format(fmt, folded, source, temp) for fmt in chosen}
            manifest = _manifest(source, outputs, reports)
            (temp / EXPORT_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    except (OutputExistsError, WriteError):
        raise
    except OSError as exc:
        raise WriteError(f"cannot write {out}: {' '.join(str(exc).split())}; nothing was written") from exc
    return ExportReport(Path(out), reports, manifest)
