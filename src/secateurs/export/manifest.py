"""``export.json``: what an export directory holds and how to load each file without secateurs.

Every file (or folder) of every format is listed with its size and the Python lines that load it, paths
relative to the export directory. The source of the model and the example inputs the files were checked
on are recorded, so ``secateurs bench`` can rebuild the original to compare against.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from secateurs.export.formats import ExportError
from secateurs.storage.atomic import EXPORT_MANIFEST
from secateurs.storage.manifest import read_versioned

EXPORT_FORMAT_NAME = "secateurs-export"
EXPORT_FORMAT_VERSION = 1


class ExportedFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    bytes: int
    #: Python that loads the file with its own library (paths relative to the export directory).
    load: str


class ExportedFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    files: dict[str, ExportedFile]
    #: Largest output difference from the PyTorch model on the example inputs (see ``export.formats.Check``).
    check: dict[str, float | None] | None = None
    notes: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0


class TensorInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class ExportManifest(BaseModel):
    """``export.json``. Unknown fields are kept, so newer writers can add to it."""

    model_config = ConfigDict(extra="allow")
    format: Literal["secateurs-export"] = EXPORT_FORMAT_NAME
    format_version: int = EXPORT_FORMAT_VERSION
    secateurs_version: str
    torch_version: str
    created: str
    #: The model spec (or saved directory) exported, and its task.
    source: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorInfo] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    formats: dict[str, ExportedFormat] = Field(default_factory=dict)
    paths: str = "relative to this directory"


def is_export_directory(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / EXPORT_MANIFEST).is_file()


def read_export_manifest(path: str | os.PathLike[str]) -> ExportManifest:
    """The validated ``export.json`` of an export directory."""
    file = Path(path) / EXPORT_MANIFEST
    if not file.is_file():
        raise ExportError(
            f"{path} is not an export directory: it has no {EXPORT_MANIFEST} (write one with secateurs export)"
        )
    return read_versioned(file, ExportManifest, EXPORT_FORMAT_VERSION, ExportError, "export manifest")
