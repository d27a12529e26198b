"""Pruned models on disk: a directory of safetensors files and a manifest, written atomically.

Layout of a directory written by :func:`save_pruned`::

    manifest.json              what this is and how to rebuild it (see :mod:`secateurs.storage.manifest`)
    model.sparse.safetensors   weights in the sparse format of :mod:`secateurs.storage.weights`
                               (weights_format "sparse" or "both")
    model.safetensors          plain dense safetensors (weights_format "dense" or "both")
    masks.safetensors          active pruning masks, bit-packed (only when the model has masks)

Nothing is pickled. The directory is built by :func:`~secateurs.storage.atomic.atomic_directory`, so a
failure half-way leaves no partial directory behind.

**Structure.** Physically shrunk layers no longer match the architecture that the source spec builds.
The manifest's ``structure["shrink"]`` entry holds the new shapes (see :mod:`secateurs.structural.persist`);
:func:`load_into` replays it on a fresh instance of the architecture before loading the weights.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from torch import nn

from secateurs.core.masks import is_pruned, load_mask_state_dict, mask_state_dict
from secateurs.storage.atomic import OutputExistsError, WriteError, atomic_directory
from secateurs.storage.manifest import (
    DENSE_FILE,
    MANIFEST,
    MASKS_FILE,
    SOURCE_FOLDER,
    SPARSE_FILE,
    FileInfo,
    Manifest,
    ModelDirectoryError,
    SourceInfo,
    read_manifest,
)
from secateurs.storage.weights import FileFormat, format_tag, read_weights, write_weights
from secateurs.structural.persist import KIND, apply_structure, structure_of
from secateurs.version import __version__

WeightsFormat = Literal["dense", "sparse", "both"]

MASKS_TAG = "masks/1"
_WEIGHTS_FILES: dict[FileFormat, str] = {"dense": DENSE_FILE, "sparse": SPARSE_FILE}


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


def _new_manifest(
    model: nn.Module,
    source: str,
    input_shape: Sequence[int] | None,
    task: str | None,
    pruning: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None,
    source_files: Mapping[str, Path],
) -> Manifest:
    """The manifest of ``model`` before its files are written (``files`` is filled as they are)."""
    structure = structure_of(model)
    return Manifest(
        secateurs_version=__version__,
        torch_version=torch.__version__,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source=SourceInfo(
            spec=source, input_shape=list(input_shape) if input_shape else None, task=task, files=sorted(source_files)
        ),
        files={},
        pruning=[dict(step) for step in pruning],
        structure={KIND: structure} if structure else {},
        extra=dict(extra or {}),
    )


def estimated_bytes(model: nn.Module, weights_format: WeightsFormat = "sparse") -> int:
    """An upper bound of what :func:`save_pruned` writes for ``model``: the dense weights once per file
    (the sparse file is never larger), masks and manifest aside; for checking free space before work."""
    dense = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return dense * (2 if weights_format == "both" else 1)


def _copy_source_files(directory: Path, source_files: Mapping[str, Path]) -> None:
    """Copies of the source's config and tokenizer, so the saved model outlives a moved or deleted source."""
    if source_files:
        (directory / SOURCE_FOLDER).mkdir()
    for name, original in source_files.items():
        shutil.copyfile(original, directory / SOURCE_FOLDER / name)


def _write_files(model: nn.Module, directory: Path, manifest: Manifest, weights_format: WeightsFormat) -> None:
    """Write the weights, the masks (if any) and the manifest into ``directory``, recording each in ``manifest``."""
    state = model.state_dict()
    formats: tuple[FileFormat, ...] = ("dense", "sparse") if weights_format == "both" else (weights_format,)
    for fmt in formats:
        name = _WEIGHTS_FILES[fmt]
        manifest.files[name] = FileInfo(format=format_tag(fmt), bytes=write_weights(state, directory / name, fmt))
    if is_pruned(model):
        masks = {name: packed.cpu() for name, packed in mask_state_dict(model).items()}
        safetensors.torch.save_file(masks, os.fspath(directory / MASKS_FILE), metadata={"secateurs.format": MASKS_TAG})
        manifest.files[MASKS_FILE] = FileInfo(format=MASKS_TAG, bytes=(directory / MASKS_FILE).stat().st_size)
        manifest.masks = MASKS_FILE
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")


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
    source_files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> SavedModel:
    """Write ``model`` to the directory ``path``, atomically.

    ``source`` is the model spec that rebuilds the architecture (see :func:`secateurs.load_model`);
    ``pruning`` the records of the pruning steps applied; ``source_files`` (name -> path, e.g. from
    :func:`secateurs.sources.portable_files`) are copied into ``source/`` and rebuild the architecture
    in place of the source, so the directory stays loadable when the source moves. A shrunk model's new shapes are recorded in the
    manifest's ``structure`` field, and active masks are saved too; :func:`load_into` restores both.
    Raises :class:`OutputExistsError` when ``path`` may not be replaced and :class:`WriteError` when
    writing fails; either way nothing is left behind.
    """
    if weights_format not in ("dense", "sparse", "both"):
        raise ValueError(f"weights_format must be 'dense', 'sparse' or 'both', got {weights_format!r}")
    files = {name: Path(original) for name, original in (source_files or {}).items()}
    manifest = _new_manifest(model, source, input_shape, task, pruning, extra, files)
    try:
        with atomic_directory(path, overwrite) as temp:
            _copy_source_files(temp, files)
            _write_files(model, temp, manifest, weights_format)
    except OutputExistsError:
        raise
    except (OSError, safetensors.SafetensorError) as exc:
        raise WriteError(f"cannot write {path}: {' '.join(str(exc).split())}; nothing was saved") from exc
    return SavedModel(
        path=Path(path), files={name: info.bytes for name, info in manifest.files.items()}, manifest=manifest
    )


def _misfit(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into a model with state dict ``own``, and a likely cause; None if it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return None
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
    return "; ".join(parts) + hint


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with an error that says what does not fit and why."""
    problem = _misfit(model.state_dict(), state)
    if problem is not None:
        raise ModelDirectoryError(f"the weights in {where} do not fit the rebuilt architecture: {problem}")
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
        load_mask_state_dict(model, read_weights(directory / manifest.masks))
    model.eval()
    return manifest
