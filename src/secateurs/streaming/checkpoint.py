"""A safetensors checkpoint on disk, read a few tensors at a time.

Only the headers are read when the checkpoint is opened (names, shapes, dtypes); tensors are read
when asked for, through ``safetensors.safe_open``, and each file is closed again at once so the
pages it mapped leave the process.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import safetensors
import torch
from safetensors import safe_open

from secateurs.errors import SecateursError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class CheckpointError(SecateursError, ValueError):
    """A checkpoint directory that cannot be streamed (no config, no safetensors, a broken index)."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it is, from the file header alone."""

    file: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Checkpoint:
    """A Hugging Face model directory whose weights are safetensors (one file, or shards and an index)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise CheckpointError(
                f"{self.directory} has no config.json; give the directory save_pretrained wrote"
            )
        self.tensors = {key: info for file in self._files() for key, info in _header(self.directory / file).items()}

    def _files(self) -> list[str]:
        index = self.directory / INDEX_FILE
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return sorted(set(weight_map.values()))
        if (self.directory / SINGLE_FILE).is_file():
            return [SINGLE_FILE]
        raise CheckpointError(
            f"{self.directory} holds no {SINGLE_FILE} or {INDEX_FILE}; streaming reads safetensors only: "
            "save the model with save_pretrained(..., safe_serialization=True)"
        )

    def nbytes(self, keys: Iterable[str] | None = None) -> int:
        chosen = self.tensors if keys is None else keys
        return sum(self.tensors[key].nbytes for key in chosen)

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype holding most of the weights (the dtype the model is built in)."""
        counts: Counter[torch.dtype] = Counter()
        for info in self.tensors.values():
            if info.dtype.is_floating_point:
                counts[info.dtype] += info.nbytes
        return counts.most_common(1)[0][0] if counts else torch.float32

    def read(self, keys: Iterable[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The tensors called ``keys`` (copied out of the files, which are closed again)."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.tensors[key].file, []).append(key)
        tensors: dict[str, torch.Tensor] = {}
        for file, names in by_file.items():
            with safe_open(os.fspath(self.directory / file), framework="pt", device=str(device or "cpu")) as handle:
                for name in names:
                    tensors[name] = handle.get_tensor(name)
        return tensors


def _header(path: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
            return {key: TensorInfo(path.name, tuple(s.get_shape()), _DTYPES[s.get_dtype()]) for key, s in slices.items()}
    except (OSError, safetensors.SafetensorError) as exc:
        raise CheckpointError(f"cannot read the safetensors header of {path}: {exc}") from None
