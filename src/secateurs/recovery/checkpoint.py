"""Checkpoints that are never half-written, and the random state a bit-exact resume needs.

Each checkpoint is one file written to a temporary name in the same directory, flushed to disk, then
renamed over its final name (``os.replace`` is atomic), so a run killed at any instant leaves either the
previous checkpoint or the new one, never a torn file. The newest complete file wins on resume; stray
temporary files from a killed writer are ignored and cleaned up.

Files hold only tensors and plain data and load with ``torch.load(weights_only=True)``. A model that
shrinking rebuilt cannot be described by a state_dict of the original architecture, so it is stored
pickled as bytes and unpickled explicitly: load checkpoints you wrote yourself only.
"""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from secateurs.errors import PruningError
from secateurs.storage import atomic_file

_NAME = re.compile(r"^(?P<prefix>.+)-(?P<step>\d{8,})\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` so that readers only ever see a complete file."""
    with atomic_file(path) as temp:
        torch.save(obj, temp)
    return Path(path)


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from (torch CPU and CUDA, NumPy, Python)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pack_module(model: nn.Module) -> bytes:
    """A whole module (architecture and weights) as bytes, for models surgery has changed."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def unpack_module(data: bytes) -> nn.Module:
    return torch.load(io.BytesIO(data), weights_only=False)


class CheckpointManager:
    """Numbered checkpoints ``<prefix>-<step>.pt`` in ``directory``; keeps the newest ``keep``."""

    def __init__(self, directory: str | os.PathLike[str], prefix: str = "checkpoint", keep: int = 2) -> None:
        if keep < 1:
            raise PruningError(f"keep must be at least 1 checkpoint, got {keep}")
        self.directory = Path(directory)
        self.prefix = prefix
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob(f".{prefix}-*.tmp"):  # left by a writer killed mid-save
            stray.unlink(missing_ok=True)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and match["prefix"] == self.prefix:
                found.append((int(match["step"]), path))
        return sorted(found)

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = atomic_save(state, self.directory / f"{self.prefix}-{step:08d}.pt")
        for _, old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1][1] if found else None

    def load(self, path: str | os.PathLike[str] | None = None, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint (or ``path``), or None when there is none."""
        path = self.latest() if path is None else Path(path)
        if path is None:
            return None
        return torch.load(path, map_location=map_location, weights_only=True)
