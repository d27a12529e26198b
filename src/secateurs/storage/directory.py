"""Pruned models on disk: a directory of safetensors files and a manifest, written atomically.

Layout of a directory written by :func:`save_pruned`::

    manifest.json              what this is and how to rebuild it (see :class:`Manifest`)
    model.sparse.safetensors   weights in the sparse format below (weights_format "sparse" or "both")
    model.safetensors          plain dense safetensors (weights_format "dense" or "both")
    masks.safetensors          active pruning masks, bit-packed (only when the model has masks)

Nothing is pickled. The directory is built under a temporary name beside the target and moved into
place with ``os.replace`` at the end, so a failure half-way leaves no partial directory behind.

**Sparse format** (``secateurs.format = "sparse-bitmask/1"`` in the safetensors metadata). The file is
ordinary safetensors, readable by any safetensors reader. A floating-point tensor ``NAME`` is stored as
two tensors when that is smaller than storing it dense:

* ``NAME::bitmask``: uint8, ``ceil(numel / 8)`` bytes; bit *i* of the C-order flattened tensor is bit
  ``7 - i % 8`` of byte ``i // 8`` (most significant bit first); 1 = nonzero;
* ``NAME::values``: 1-D, the tensor's dtype, its nonzero values in C order.

The metadata key ``secateurs.sparse`` maps every such ``NAME`` to its shape and dtype. All other tensors
are stored dense under their own name. ``secateurs.aliases`` maps state-dict keys of tied tensors to the
one key that holds the data (both formats). A float32 tensor at 50% sparsity takes 2.125 bytes per
weight instead of 4; the sparse form wins below about 97% density.

**Structure.** Physically shrunk layers no longer match the architecture that the source spec builds.
The manifest's ``structure["shrink"]`` entry holds the new shapes (see :mod:`secateurs.structural.persist`);
:func:`load_into` replays it on a fresh instance of the architecture before loading the weights.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import safe_open
from torch import nn

from secateurs.core.masks import is_pruned, load_mask_state_dict, mask_state_dict, pack_mask, unpack_mask
from secateurs.errors import SecateursError
from secateurs.structural.persist import KIND, apply_structure, structure_of
from secateurs.version import __version__

WeightsFormat = Literal["dense", "sparse", "both"]

MANIFEST = "manifest.json"
DENSE_FILE = "model.safetensors"
SPARSE_FILE = "model.sparse.safetensors"
MASKS_FILE = "masks.safetensors"
FORMAT_NAME = "secateurs-pruned-model"
FORMAT_VERSION = 1
SPARSE_TAG = "sparse-bitmask/1"
DENSE_TAG = "dense/1"
_BITMASK, _VALUES = "::bitmask", "::values"


class OutputExistsError(SecateursError, FileExistsError):
    """The output directory exists and may not be replaced."""


class WriteError(SecateursError, OSError):
    """Writing a model directory failed (disk full, permissions...); nothing was left behind."""


class ModelDirectoryError(SecateursError, ValueError):
    """A model directory that is missing, incomplete, corrupt, or does not fit its architecture."""


def cache_dir() -> Path:
    """Where secateurs caches things: ``$SECATEURS_CACHE``, else ``$XDG_CACHE_HOME/secateurs``, else ``~/.cache/secateurs``."""
    if os.environ.get("SECATEURS_CACHE"):
        return Path(os.environ["SECATEURS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "secateurs"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _file_mode() -> int:
    """The mode an ordinary new file gets (0o666 minus the umask), read once at import: reading the umask
    means setting it, which is not thread-safe."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _finish_file(path: Path) -> None:
    """Give a finished file ordinary permissions (temp files and safetensors' files start private) and flush it."""
    os.chmod(path, _FILE_MODE)
    _fsync(path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        _finish_file(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def check_output_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse an output directory that may not be written, before any work is done.

    An existing directory is replaced only with ``overwrite``, and only when it is empty or was
    written by secateurs (has a manifest): an unrelated directory is never deleted.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputExistsError(f"{target} exists and is not a directory; choose another --out path")
        if not overwrite:
            raise OutputExistsError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise OutputExistsError(
                f"{target} is not a secateurs model directory (no {MANIFEST}); refusing to replace it, "
                "choose another path or remove it yourself"
            )
    return target


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it becomes ``path``.

    On any error the temporary directory is removed and ``path`` is left as it was.
    """
    target = check_output_dir(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        yield temp
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            try:
                os.replace(temp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# ---- weights: dense and sparse safetensors -------------------------------------------------------


def _storage_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


def _dedup(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors once each (tied weights share storage) and the aliases that point at them."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ModelDirectoryError(
                f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor; it cannot be saved"
            )
        if tensor.numel() and tensor.device.type != "meta":
            key = _storage_key(tensor)
            if key in first:
                aliases[name] = first[key]
                continue
            first[key] = name
        unique[name] = tensor.detach()
    return unique, aliases


def _sparse_pays(tensor: torch.Tensor, nonzero: int) -> bool:
    numel = tensor.numel()
    return math.ceil(numel / 8) + nonzero * tensor.element_size() < numel * tensor.element_size()


def encode_state_dict(
    state: Mapping[str, torch.Tensor], fmt: Literal["dense", "sparse"]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and safetensors metadata that represent ``state`` in format ``fmt`` (see the module docstring)."""
    if fmt not in ("dense", "sparse"):
        raise ValueError(f"weights format must be 'dense' or 'sparse', got {fmt!r}")
    unique, aliases = _dedup(state)
    tensors: dict[str, torch.Tensor] = {}
    sparse: dict[str, dict[str, Any]] = {}
    for name, tensor in unique.items():
        if name.endswith((_BITMASK, _VALUES)):
            raise ModelDirectoryError(f"state dict key {name!r} ends with a suffix the sparse format reserves")
        tensor = tensor.to("cpu").contiguous()
        if fmt == "sparse" and tensor.is_floating_point():
            nonzero = tensor != 0
            count = int(nonzero.sum())
            if _sparse_pays(tensor, count):
                tensors[name + _BITMASK] = pack_mask(nonzero)
                tensors[name + _VALUES] = tensor[nonzero]
                sparse[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
                continue
        tensors[name] = tensor
    metadata = {"format": "pt", "secateurs.format": SPARSE_TAG if fmt == "sparse" else DENSE_TAG}
    if sparse:
        metadata["secateurs.sparse"] = json.dumps(sparse, separators=(",", ":"))
    if aliases:
        metadata["secateurs.aliases"] = json.dumps(aliases, separators=(",", ":"))
    return tensors, metadata


def decode_state_dict(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_state_dict`; plain safetensors files (no secateurs metadata) pass through."""
    metadata = metadata or {}
    sparse = json.loads(metadata.get("secateurs.sparse", "{}"))
    aliases = json.loads(metadata.get("secateurs.aliases", "{}"))
    state = {name: t for name, t in tensors.items() if not name.endswith((_BITMASK, _VALUES))}
    for name, info in sparse.items():
        try:
            bits, values = tensors[name + _BITMASK], tensors[name + _VALUES]
        except KeyError as exc:
            raise ModelDirectoryError(
                f"sparse tensor {name!r} lacks its {exc.args[0]!r} part; the file is corrupt"
            ) from None
        shape = tuple(info["shape"])
        mask = unpack_mask(bits, shape)
        if int(mask.sum()) != values.numel():
            raise ModelDirectoryError(
                f"sparse tensor {name!r}: bitmask has {int(mask.sum())} ones for {values.numel()} values; the file is corrupt"
            )
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[mask] = values
        state[name] = dense
    for alias, source in aliases.items():
        state[alias] = state[source]
    return state


def encoded_size(state: Mapping[str, torch.Tensor], fmt: Literal["dense", "sparse"]) -> int:
    """Exact size in bytes of the file :func:`write_weights` would write (serialised in memory)."""
    tensors, metadata = encode_state_dict(state, fmt)
    return len(safetensors.torch.save(tensors, metadata=metadata))


def write_weights(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], fmt: Literal["dense", "sparse"]
) -> int:
    """Write ``state`` to ``path`` in format ``fmt``; returns the file size in bytes."""
    tensors, metadata = encode_state_dict(state, fmt)
    safetensors.torch.save_file(tensors, os.fspath(path), metadata=metadata)
    return os.path.getsize(path)


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a dense or sparse weights file into an ordinary state dict (on CPU)."""
    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, safetensors.SafetensorError) as exc:
        raise ModelDirectoryError(f"cannot read weights from {path}: {exc}") from None
    return decode_state_dict(tensors, metadata)


# ---- manifest ------------------------------------------------------------------------------------


class SourceInfo(BaseModel):
    """How to rebuild the architecture: the model spec and the example input that goes with it."""

    model_config = ConfigDict(extra="allow")
    spec: str
    input_shape: list[int] | None = None
    task: str | None = None


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


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The validated manifest of a model directory."""
    directory = Path(path)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelDirectoryError(f"{directory} is not a secateurs model directory: it has no {MANIFEST}")
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"cannot read {manifest_path}: {exc}") from None
    if (
        isinstance(data, dict)
        and isinstance(data.get("format_version"), int)
        and data["format_version"] > FORMAT_VERSION
    ):
        raise ModelDirectoryError(
            f"{manifest_path} has format version {data['format_version']}; this secateurs reads up to "
            f"{FORMAT_VERSION}: upgrade secateurs"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise ModelDirectoryError(f"{manifest_path} is not a valid manifest: {where}: {first['msg']}") from None


def is_model_directory(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST).is_file()


# ---- save and load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedModel:
    """What :func:`save_pruned` wrote: the directory, each file's size, and the manifest."""

    path: Path
    files: dict[str, int] = field(default_factory=dict)
    manifest: Manifest | None = None

    @property
    def bytes(self) -> int:
        """Size of the weights as saved: the smaller weights file (masks and manifest excluded)."""
        sizes = [size for name, size in self.files.items() if name in (DENSE_FILE, SPARSE_FILE)]
        return min(sizes) if sizes else 0


def save_pruned(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    source: str,
    input_shape: Sequence[int] | None = None,
    task: str | None = None,
    pruning: Sequence[Mapping[str, Any]] = (),
    weights_format: WeightsFormat = "sparse",
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> SavedModel:
    """Write ``model`` to the directory ``path``, atomically.

    ``source`` is the model spec that rebuilds the architecture (see :func:`secateurs.models.load_model`);
    ``pruning`` the records of the pruning steps applied. A shrunk model's new shapes are recorded in the
    manifest's ``structure`` field, and active masks are saved too; :func:`load_into` restores both.
    Raises :class:`OutputExistsError` when ``path`` may not be replaced and :class:`WriteError` when
    writing fails; either way nothing is left behind.
    """

    if weights_format not in ("dense", "sparse", "both"):
        raise ValueError(f"weights_format must be 'dense', 'sparse' or 'both', got {weights_format!r}")
    structure = {KIND: structure_of(model)} if structure_of(model) else {}
    manifest = Manifest(
        secateurs_version=__version__,
        torch_version=torch.__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=SourceInfo(spec=source, input_shape=list(input_shape) if input_shape else None, task=task),
        files={},
        pruning=[dict(step) for step in pruning],
        structure=structure,
        extra=dict(extra or {}),
    )
    state = model.state_dict()
    formats = ("dense", "sparse") if weights_format == "both" else (weights_format,)
    try:
        with atomic_directory(path, overwrite) as temp:
            for fmt in formats:
                name = DENSE_FILE if fmt == "dense" else SPARSE_FILE
                manifest.files[name] = FileInfo(
                    format=DENSE_TAG if fmt == "dense" else SPARSE_TAG, bytes=write_weights(state, temp / name, fmt)
                )
            if is_pruned(model):
                masks = {name: packed.cpu() for name, packed in mask_state_dict(model).items()}
                safetensors.torch.save_file(
                    masks, os.fspath(temp / MASKS_FILE), metadata={"secateurs.format": "masks/1"}
                )
                manifest.files[MASKS_FILE] = FileInfo(format="masks/1", bytes=(temp / MASKS_FILE).stat().st_size)
                manifest.masks = MASKS_FILE
            (temp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            for name in (*manifest.files, MANIFEST):
                _finish_file(temp / name)
    except OutputExistsError:
        raise
    except (OSError, safetensors.SafetensorError) as exc:
        raise WriteError(f"cannot write {path}: {' '.join(str(exc).split())}; nothing was saved") from exc
    return SavedModel(
        path=Path(path), files={name: info.bytes for name, info in manifest.files.items()}, manifest=manifest
    )


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with an error that says what does not fit and why."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shape mismatch (saved vs rebuilt): {', '.join(mismatched[:3])}")
        if missing:
            parts.append(f"missing: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:3])}")
        hint = (
            " (layers were resized after the architecture was built: the manifest needs a structure entry)"
            if mismatched
            else " (was the source model changed since it was saved?)"
        )
        raise ModelDirectoryError(
            f"the weights in {where} do not fit the rebuilt architecture: {'; '.join(parts)}{hint}"
        )
    model.load_state_dict(state, strict=True)


def load_into(model: nn.Module, path: str | os.PathLike[str], *, restore_masks: bool = True) -> Manifest:
    """Load a directory written by :func:`save_pruned` into ``model``, a fresh instance of the architecture
    it was saved from: shrunk shapes replayed, weights loaded, then (optionally) the active masks."""
    directory = Path(path)
    manifest = read_manifest(directory)
    apply_structure(model, manifest.structure.get(KIND, {}))
    weights = directory / manifest.weights_file
    load_weights_into(model, read_weights(weights), str(weights))
    if restore_masks and manifest.masks:
        packed = safetensors.torch.load_file(os.fspath(directory / manifest.masks))
        load_mask_state_dict(model, packed)
    model.eval()
    return manifest
