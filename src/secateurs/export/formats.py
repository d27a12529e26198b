"""The format registry: one small class per output format, registered by name.

A format says, before any work, whether it can take a model (:meth:`ExportFormat.check`: an optional package
missing, a model the format cannot describe), then writes its files into the export directory
(:meth:`ExportFormat.write`) and says how to load each of them without secateurs. A new format is one class::

    @register_format("fp16")
    class HalfPrecision(ExportFormat):
        summary = "the state dict in float16 safetensors"
        requires = (("safetensors", "safetensors"),)  # (module, pip name) of each optional package

        def check(self, model):                   # cheap; raise UnsupportedFormatError naming the fix
            ...

        def write(self, model, example_inputs, directory):
            ...                                   # write directory / "model.fp16.safetensors"
            return Written(files={"model.fp16.safetensors": "model.load_state_dict(safetensors.torch.load_file(...))"})

        def load(self, directory, threads=None):  # optional: the written model as a module, for bench
            ...

``write`` gets a copy of the model with its pruning masks folded into the weights, which it may change but
not keep; the directory is the export's temporary directory, so a failure leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import nn

from secateurs.errors import MissingDependencyError, SecateursError
from secateurs.runtime import Inputs


class ExportError(SecateursError, RuntimeError):
    """A format could not be written (the exporter's reason, or its output failed the check); nothing was written."""


class UnsupportedFormatError(ExportError, ValueError):
    """A format that does not exist, or that this model cannot take; refused before any work."""


@dataclass(frozen=True)
class Check:
    """How far a written file's outputs are from the PyTorch model's on the example inputs.

    ``bound`` is the largest difference accepted (None: reported, not enforced, e.g. int8 rounding);
    ``scale`` the largest absolute output of the PyTorch model, which the relative error divides by."""

    max_abs_diff: float
    scale: float
    bound: float | None = None

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.scale if self.scale else self.max_abs_diff

    def to_dict(self) -> dict[str, float | None]:
        return {"max_abs_diff": self.max_abs_diff, "relative": self.relative, "scale": self.scale, "bound": self.bound}


@dataclass
class Written:
    """What :meth:`ExportFormat.write` wrote: each file or folder (relative to the export directory) with the
    Python that loads it without secateurs, the check of its outputs, and notes for the reader."""

    files: dict[str, str]
    check: Check | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class ExportFormat:
    """One output format. Subclasses set ``summary`` (and ``requires``) and implement ``check`` and ``write``."""

    #: The registered name (set by :func:`register_format`).
    name: ClassVar[str] = ""
    #: One line for help texts.
    summary: ClassVar[str] = ""
    #: ``(module, pip name)`` of every optional package the format needs.
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Whether the format runs the model (tracing, checking), so it needs example inputs.
    needs_inputs: ClassVar[bool] = True
    #: A folder (relative to the export directory) that should also hold the source's config and
    #: tokenizer files, or None.
    source_files_into: ClassVar[str | None] = None

    def check(self, model: nn.Module) -> None:
        """Raise :class:`UnsupportedFormatError` (or :class:`MissingDependencyError`) when the format cannot take
        ``model``; cheap, called for every requested format before any is written."""
        check_packages(self.name, self.requires)

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        raise NotImplementedError

    def load(self, directory: Path, threads: int | None = None) -> nn.Module | None:
        """The written model as a module that runs the example inputs (for ``secateurs bench``), or None when
        it cannot run here; ``directory`` is the export directory, ``threads`` the intra-op threads it will
        be timed on (for runtimes that fix them when loading)."""
        return None


def check_packages(format_name: str, requires: tuple[tuple[str, str], ...]) -> None:
    """Refuse a format whose optional packages are not installed, naming the pip command."""
    missing = [pip for module, pip in requires if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingDependencyError(
            f"the {format_name} format needs {', '.join(repr(m) for m in missing)}, not installed; install with: "
            f"pip install {' '.join(missing)}"
        )


_FORMATS: dict[str, type[ExportFormat]] = {}
FormatClass = TypeVar("FormatClass", bound=type[ExportFormat])


def register_format(name: str) -> Callable[[FormatClass], FormatClass]:
    """Class decorator: make ``name`` an export format (``export(..., formats=[name])``, ``--format name``)."""

    def decorate(cls: FormatClass) -> FormatClass:
        cls.name = name
        _FORMATS[name] = cls
        return cls

    return decorate


def available_formats() -> list[str]:
    """Registered format names, in registration order (the order an export writes them)."""
    return list(_FORMATS)


def format_summaries() -> Mapping[str, str]:
    return {name: cls.summary for name, cls in _FORMATS.items()}


def get_format(spec: str | ExportFormat) -> ExportFormat:
    """A format instance: ``spec`` itself, or the registered format of that name."""
    if isinstance(spec, ExportFormat):
        return spec
    cls = _FORMATS.get(str(spec).strip().lower())
    if cls is None:
        raise UnsupportedFormatError(f"unknown export format {spec!r}; use one of: {', '.join(_FORMATS)}")
    return cls()


def resolve_formats(
    specs: str | ExportFormat | list[str | ExportFormat] | tuple[str | ExportFormat, ...],
) -> list[ExportFormat]:
    """Format instances for ``specs`` (names may be comma lists), once each, in registration order."""
    items = [specs] if isinstance(specs, (str, ExportFormat)) else list(specs)
    names: list[str | ExportFormat] = []
    for item in items:
        if isinstance(item, str):
            names.extend(part.strip() for part in item.split(",") if part.strip())
        else:
            names.append(item)
    if not names:
        raise UnsupportedFormatError(f"formats is empty; give at least one of: {', '.join(_FORMATS)}")
    chosen = {fmt.name: fmt for fmt in map(get_format, names)}
    order = {name: index for index, name in enumerate(_FORMATS)}
    return sorted(chosen.values(), key=lambda fmt: order.get(fmt.name, len(order)))
