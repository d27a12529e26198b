"""Saved model directories as a source: the architecture rebuilt from the manifest's spec, then the
shapes, weights and masks the directory holds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from secateurs.sources.model import LoadedModel, parse_input_shape
from secateurs.sources.registry import build, relocated
from secateurs.storage import SOURCE_FOLDER, load_into, read_manifest


def load_pruned(
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    restore_masks: bool = True,
) -> LoadedModel:
    """Rebuild a model saved by :func:`secateurs.save_pruned`, masked or shrunk: the architecture from its
    source spec (or the copies of the source's config and tokenizer saved beside it, so moving the
    source does not matter), then shapes, weights and (optionally) masks from the directory. The result has
    ``manifest`` and ``directory`` set; ``input_shape`` overrides the saved example input shape."""
    directory = Path(path)
    manifest = read_manifest(directory)
    shape = input_shape or manifest.source.input_shape
    spec = manifest.source.spec
    if manifest.source.files:
        spec = relocated(spec, directory / SOURCE_FOLDER)
    loaded = build(spec, parse_input_shape(shape) if shape is not None else None, weights=False)
    load_into(loaded.model, directory, restore_masks=restore_masks)
    return replace(loaded, manifest=manifest, directory=directory)
