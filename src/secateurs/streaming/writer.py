"""The output directory of a streamed run: one shard per block plus one for the rest, each written
atomically, a resume state after every block, and the index and config files once all shards exist.

A run killed at any moment leaves finished shards and a state that names the next block and holds the
activations that enter it; a new run with the same settings continues from there and writes the same
bytes an uninterrupted run would. The index is written last, so a directory with an index is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secateurs.errors import SecateursError
from secateurs.storage import atomic_file, write_weights
from secateurs.storage.weights import FileFormat
from secateurs.streaming.checkpoint import INDEX_FILE, Checkpoint

STATE_DIR = ".secateurs-stream"
#: Files besides the weights that make the output a loadable Hugging Face directory, copied when present.
COPIED_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
)  # fmt: skip


class ResumeError(SecateursError, ValueError):
    """The output directory holds something a streamed run may not continue or replace."""


@dataclass
class ResumeState:
    """Where a killed run stopped: the next block to visit, the calibration inputs that reach it, and what the
    blocks visited so far measured (``results``: a read-only pass's per-block numbers, such as block influence)."""

    settings: str
    next_block: int
    inputs: list[Any]
    results: dict[str, float] = field(default_factory=dict)


class ShardWriter:
    """Writes ``num_shards`` weight files into ``out_dir`` in ``weights_format``, and the resume state."""

    def __init__(self, out_dir: str | os.PathLike[str], num_shards: int, weights_format: FileFormat = "dense") -> None:
        self.out_dir = Path(out_dir)
        self.num_shards = num_shards
        self.weights_format = weights_format
        self.state_file = self.out_dir / STATE_DIR / "state.pt"

    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{self.num_shards:05d}.safetensors"

    def write_shard(self, index: int, tensors: Mapping[str, torch.Tensor]) -> None:
        with atomic_file(self.out_dir / self.shard_name(index)) as temp:
            write_weights(tensors, temp, self.weights_format)

    def save_state(self, state: ResumeState) -> None:
        with atomic_file(self.state_file) as temp:
            torch.save(state.__dict__, temp)

    def load_state(self, settings: str) -> ResumeState | None:
        """The state of an earlier run with the same ``settings``; refuses a state from other settings."""
        if not self.state_file.is_file():
            return None
        state = ResumeState(**torch.load(self.state_file, weights_only=False))
        if state.settings != settings:
            raise ResumeError(
                f"{self.out_dir} holds an unfinished streamed run with other settings; pass resume=False to "
                "start over there, or choose another out_dir"
            )
        return state

    def prepare(self, resume: bool) -> None:
        """Refuse an out_dir holding anything but a streamed run's files; without ``resume``, empty it."""
        if not self.out_dir.exists():
            self.out_dir.mkdir(parents=True)
            return
        entries = list(self.out_dir.iterdir())
        if entries and not (self.out_dir / STATE_DIR).is_dir() and not (self.out_dir / INDEX_FILE).is_file():
            raise ResumeError(
                f"{self.out_dir} is not empty and holds no streamed run; choose an empty or new out_dir"
            )
        (self.out_dir / INDEX_FILE).unlink(missing_ok=True)  # the directory is incomplete until finish()
        if not resume:
            for entry in entries:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def finish(self, checkpoint: Checkpoint, shard_keys: list[list[str]], config: str | None = None) -> None:
        """Copy the config and tokenizer files (``config``: the text of config.json instead of the checkpoint's),
        write the index, and drop the resume state."""
        for name in COPIED_FILES:
            if (checkpoint.directory / name).is_file():
                with atomic_file(self.out_dir / name) as temp:
                    shutil.copyfile(checkpoint.directory / name, temp)
        if config is not None:
            with atomic_file(self.out_dir / "config.json") as temp:
                temp.write_text(config)
        weight_map = {key: self.shard_name(i) for i, keys in enumerate(shard_keys) for key in keys}
        total = sum((self.out_dir / self.shard_name(i)).stat().st_size for i in range(self.num_shards))
        index = {"metadata": {"total_size": total, "secateurs.weights_format": self.weights_format},
                 "weight_map": dict(sorted(weight_map.items()))}  # fmt: skip
        with atomic_file(self.out_dir / INDEX_FILE) as temp:
            temp.write_text(json.dumps(index, indent=2))
        shutil.rmtree(self.out_dir / STATE_DIR, ignore_errors=True)
