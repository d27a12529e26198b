"""``manifest.json``: what a model directory holds and how to rebuild its architecture, validated on read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

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


Schema = TypeVar("Schema", bound=BaseModel)


def read_versioned(file: Path, schema: type[Schema], newest: int, error: type[Exception], what: str) -> Schema:
    """``file`` validated as ``schema``; unreadable JSON, a format version above ``newest`` (written by a newer
    secateurs) or a field that does not fit raise ``error`` naming the file (``what`` says what it should be)."""
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {file}: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > newest:
        raise error(f"{file} has format version {version}; this secateurs reads up to {newest}: upgrade secateurs")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise error(f"{file} is not a valid {what}: {where}: {first['msg']}") from None


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The validated manifest of a model directory."""
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelDirectoryError(f"{directory} is not a secateurs model directory: it has no {MANIFEST}")
    return read_versioned(manifest_path, Manifest, FORMAT_VERSION, ModelDirectoryError, "manifest")


def is_model_directory(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()
