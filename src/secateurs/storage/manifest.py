"""``manifest.json``: what a model directory holds and how to rebuild its architecture, validated on read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from secateurs.errors import SecateursError

MANIFEST = "manifest.json"
DENSE_FILE = "model.safetensors"
SPARSE_FILE = "model.sparse.safetensors"
MASKS_FILE = "masks.safetensors"
SOURCE_FOLDER = "source"
FORMAT_NAME = "secateurs-pruned-model"
FORMAT_VERSION = 1


class ModelDirectoryError(SecateursError, ValueError):
    """A model directory that is missing, incomplete, corrupt, or does not fit its architecture."""


class SourceInfo(BaseModel):
    """How to rebuild the architecture: the model spec and the example input that goes with it."""

    model_config = ConfigDict(extra="allow")
    spec: str
    input_shape: list[int] | None = None
    task: str | None = None
    #: Files of the source copied into the directory's ``source/`` folder (config, tokenizer), which then
    #: stands in for the source when the model is rebuilt.
    files: list[str] = Field(default_factory=list)


class FileInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: str
    bytes: int


class Manifest(BaseModel):
    """``manifest.json``. Unknown fields are kept, so newer writers can add to it."""

    model_config = ConfigDict(extra="allow")
    format: Literal["secateurs-pruned-model"] = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    secateurs_version: str
    torch_version: str
    created: str
    source: SourceInfo
    files: dict[str, FileInfo]
    masks: str | None = None
    #: One record per pruning step, oldest first (method, pattern, scope, amount, sparsity, ...).
    pruning: list[dict[str, Any]] = Field(default_factory=list)
    #: Per kind, what a structure hook needs to reshape the rebuilt architecture (filled by surgery).
    structure: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def weights_file(self) -> str:
        """The weights file to read: the dense one when present (faster), else the sparse one."""
        for name in (DENSE_FILE, SPARSE_FILE):
            if name in self.files:
                return name
        raise ModelDirectoryError("the manifest lists no weights file")


def _read_json(manifest_path: Path) -> Any:
    """The manifest's JSON, refused when it is unreadable or from a newer format than this secateurs reads."""
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"cannot read {manifest_path}: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{manifest_path} has format version {version}; this secateurs reads up to {FORMAT_VERSION}: "
            "upgrade secateurs"
        )
    return data


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The validated manifest of a model directory."""
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelDirectoryError(f"{directory} is not a secateurs model directory: it has no {MANIFEST}")
    data = _read_json(manifest_path)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ModelDirectoryError(f"{manifest_path} is not a valid manifest: {where}: {first['msg']}") from None


def is_model_directory(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()
