"""``bench``: a pruned model and its exports side by side: size on disk, latency and the task metric.

Rows: the dense original (rebuilt from the pruned directory's source), the pruned model as secateurs
loads it, and every file of every export directory that can run here (each format's
:meth:`~secateurs.export.formats.ExportFormat.load`; onnxruntime sessions through
:class:`~secateurs.export.onnx_format.OrtModule`). All of them are timed by
:func:`secateurs.measure.compare_latency`, interleaved round by round against the dense original, on the
same inputs, threads and flushed denormals (onnxruntime sessions are opened on the same number of threads
and flush denormals too). The metric is the model's own (:attr:`LoadedModel.evaluate`), where it has one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.utils._pytree as pytree
from torch import nn

from secateurs.export.formats import UnsupportedFormatError, get_format
from secateurs.export.manifest import ExportManifest, read_export_manifest
from secateurs.export.prepare import reference_outputs, tensor_leaves, without_cache
from secateurs.export.program import exporter_reason
from secateurs.measure import DEFAULT_BUDGET_S, Latency, LatencyRatio, compare_latency, size_on_disk
from secateurs.sources import LoadedModel, load_model


@dataclass(frozen=True)
class BenchRow:
    """One model or exported file: bytes on disk, latency and its ratio to the first row's, task metrics."""

    name: str
    bytes: int | None
    latency: Latency | None = None
    ratio: LatencyRatio | None = None
    metrics: dict[str, float] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "bytes": self.bytes, "metrics": self.metrics, "note": self.note,
            "latency": self.latency.to_dict() if self.latency else None,
            "ratio": self.ratio.to_dict() if self.ratio else None,
        }  # fmt: skip


@dataclass(frozen=True)
class BenchReport:
    """Every row of :func:`bench`, and how the latencies were taken."""

    rows: list[BenchRow]
    threads: int
    rounds: int | None = None
    noisy: bool = False
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> BenchRow:
        return next(row for row in self.rows if row.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "rounds": self.rounds,
            "noisy": self.noisy,
            "notes": self.notes,
            "rows": [row.to_dict() for row in self.rows],
        }


class Restructured(nn.Module):
    """A module whose outputs are regrouped like the original model's (a Hugging Face output object, a
    tuple...), so that the model's metric reads an ONNX session's list or TorchScript's dict the same way."""

    def __init__(self, module: nn.Module, reference: Any) -> None:
        super().__init__()
        self.module = module
        leaves, self.spec = pytree.tree_flatten(reference)
        self.regroup = bool(leaves) and len(tensor_leaves(leaves)) == len(leaves)

    def train(self, mode: bool = True) -> Restructured:
        """Passed on, except to a ``torch.export`` module, which refuses it: its graph keeps the mode it was
        traced in."""
        self.training = mode
        with contextlib.suppress(NotImplementedError):
            self.module.train(mode)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.module(*args, **kwargs)
        leaves = tensor_leaves(outputs)
        return (
            pytree.tree_unflatten(leaves, self.spec)
            if self.regroup and len(leaves) == self.spec.num_leaves
            else outputs
        )


@dataclass
class _Candidate:
    name: str
    bytes: int | None
    module: nn.Module | None
    note: str = ""


def _dense_original(loaded: LoadedModel) -> _Candidate:
    """The model the pruned directory was made from, rebuilt from its source spec with its weights."""
    spec = loaded.manifest.source.spec if loaded.manifest else loaded.spec
    try:
        dense = load_model(spec, input_shape=loaded.input_shape, check=False).model
    except Exception as exc:  # noqa: BLE001 - the source may have moved: the row says why it is missing
        return _Candidate("dense", None, None, f"source {spec} cannot be rebuilt: {exporter_reason(exc)}")
    return _Candidate("dense", size_on_disk(dense).dense_bytes, dense, "plain safetensors size")


def _pruned(loaded: LoadedModel) -> _Candidate:
    if loaded.manifest is None:
        return _Candidate("model", size_on_disk(loaded.model).dense_bytes, loaded.model, "plain safetensors size")
    stored = sum(info.bytes for info in loaded.manifest.files.values())
    return _Candidate("pruned", stored, loaded.model, "secateurs directory (sparse weights, masks)")


def _exported(directory: Path, manifest: ExportManifest, label: str, threads: int) -> list[_Candidate]:
    rows = []
    for name, entry in manifest.formats.items():
        size = sum(file.bytes for file in entry.files.values())
        try:
            module = get_format(name).load(directory, threads)
            note = "" if module is not None else "size only: this format does not run here"
        except (UnsupportedFormatError, ImportError, RuntimeError, OSError) as exc:
            module, note = None, f"cannot be loaded here: {exporter_reason(exc)}"
        rows.append(_Candidate(f"{name}{label}", size, module, note))
    return rows


def _metric(loaded: LoadedModel, module: nn.Module) -> tuple[dict[str, float] | None, str]:
    try:
        return loaded.evaluate(module), ""  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - a format that cannot run the metric's inputs: the row says why
        return None, f"metric failed: {exporter_reason(exc)}"


def _candidates(loaded: LoadedModel, exports: Sequence[str | os.PathLike[str]], threads: int) -> list[_Candidate]:
    rows = [_dense_original(loaded)] if loaded.manifest is not None else []
    rows.append(_pruned(loaded))
    for directory in map(Path, exports):
        label = f" ({directory.name})" if len(exports) > 1 else ""
        rows.extend(_exported(directory, read_export_manifest(directory), label, threads))
    return rows


def bench(
    model: str | os.PathLike[str] | LoadedModel,
    exports: Sequence[str | os.PathLike[str]] = (),
    *,
    threads: int = 1,
    budget_s: float = DEFAULT_BUDGET_S,
    latency: bool = True,
    metric: bool = True,
) -> BenchReport:
    """Size, latency and task metric of ``model`` (a pruned directory or any model spec), of the dense model it
    came from, and of every file in the export directories ``exports``, on ``model``'s example inputs."""
    for directory in exports:
        read_export_manifest(directory)  # a bad export directory is refused before any model is loaded
    loaded = model if isinstance(model, LoadedModel) else load_model(os.fspath(model))
    candidates = _candidates(loaded, exports, threads)
    runnable = {c.name: c.module for c in candidates if c.module is not None}
    with contextlib.ExitStack() as stack:
        for module in runnable.values():
            stack.enter_context(without_cache(module))
        reference = reference_outputs(loaded.model, loaded.example_inputs)
        wrapped = {name: Restructured(module, reference) for name, module in runnable.items()}
        timing = (
            compare_latency(wrapped, loaded.example_inputs, threads=threads, budget_s=budget_s) if latency else None
        )
        metrics = (
            {name: _metric(loaded, module) for name, module in wrapped.items()} if metric and loaded.evaluate else {}
        )
    return _report(candidates, timing, metrics, threads)


def _report(
    candidates: list[_Candidate], timing: Any, metrics: Mapping[str, tuple[Any, str]], threads: int
) -> BenchReport:
    rows = []
    for c in candidates:
        values, metric_note = metrics.get(c.name, (None, ""))
        timed = timing is not None and c.name in timing.latencies
        rows.append(BenchRow(
            c.name, c.bytes, timing.latencies[c.name] if timed else None, timing.ratios[c.name] if timed else None,
            values, "; ".join(n for n in (c.note, metric_note) if n),
        ))  # fmt: skip
    return BenchReport(rows, threads, timing.rounds if timing else None, bool(timing and timing.noisy))
