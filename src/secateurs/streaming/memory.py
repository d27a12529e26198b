"""How much memory a streamed run needs, estimated from the checkpoint's headers before any work, and
the refusal when it exceeds ``max_memory``; also whether a model needs streaming at all.

The peak is the largest of three moments: catching the calibration inputs (everything outside the
blocks loaded, plus the activations); writing the last shard (everything outside the blocks, twice);
and one block's turn (the block and the activations, plus the larger of its statistics with SparseGPT's
working copies of one layer while it is pruned, and the block's copy while its shard is serialised).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from secateurs.core.targets import io_dims, is_linear_like
from secateurs.data.methods import Needs
from secateurs.errors import SecateursError
from secateurs.streaming.checkpoint import Checkpoint

#: The interpreter with torch and transformers imported, before any tensor.
RUNTIME_BYTES = 600 * 2**20
#: d_in x d_in float32 matrices SparseGPT's solver holds besides the block's Hessians (its working factor, and
#: one for transient copies): 3.44 GB measured on Llama-2-7B's first block (d_in = 11008), 3.79 GB estimated.
SOLVER_HESSIAN_COPIES = 2
#: An in-memory run holds the model plus its statistics and working copies: about 3x the checkpoint (measured).
IN_MEMORY_FACTOR = 3.1

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}  # fmt: skip


class MemoryBudgetError(SecateursError, MemoryError):
    """A streamed run would need more memory than ``max_memory`` allows."""


def parse_memory(value: int | str) -> int:
    """Bytes from an int or a string such as ``"4GB"``, ``"512MiB"`` (binary units either way)."""
    if isinstance(value, int) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if match is None or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise MemoryBudgetError(f"max_memory must be a positive size such as 4GB or 512MB, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a streamed run's peak."""

    block: int
    statistics: int
    solver: int
    activations: int
    outside_blocks: int
    runtime: int = RUNTIME_BYTES

    @property
    def peak(self) -> int:
        catching = self.outside_blocks + self.activations
        # Statistics and the solver are freed before the shard is serialised (which copies the block).
        block_turn = self.block + self.activations + max(self.block, self.statistics + self.solver)
        # The last shard: read, copied while serialised, and the tied head's copy (1.1B: 2.12 GB measured, 2.20 estimated).
        finishing = 3 * self.outside_blocks
        return self.runtime + max(catching, block_turn, finishing)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "peak": self.peak}


def estimate(
    block: nn.Module, block_bytes: int, outside_bytes: int, needs: Needs, tokens: int, batch_tokens: int,
    activations_itemsize: int,
) -> MemoryEstimate:  # fmt: skip
    """The peak of a run over blocks shaped like ``block`` (a meta skeleton's), for ``tokens`` calibration
    tokens fed ``batch_tokens`` at a time."""
    shapes = [_in_out(module) for module in block.modules() if is_linear_like(module)]
    widest_in = max((i for i, _ in shapes), default=0)
    widest = max((max(i, o) for i, o in shapes), default=0)
    hidden = _hidden_size(block, widest_in)
    if needs is Needs.HESSIAN:
        statistics = sum(4 * i * i for i, _ in shapes)
        solver = max((4 * (o * i + SOLVER_HESSIAN_COPIES * i * i) for i, o in shapes), default=0)
    else:
        statistics = sum(4 * i for i, _ in shapes) if needs.reads_inputs else 0
        solver = max((4 * o * i for i, o in shapes), default=0)  # scores of one layer
    activations = 2 * tokens * hidden * activations_itemsize + 4 * batch_tokens * widest * 4
    return MemoryEstimate(block_bytes, statistics, solver, activations, outside_bytes)


def check_budget(estimated: MemoryEstimate, max_memory: int) -> None:
    """Refuse a run whose estimated peak exceeds ``max_memory``, naming the parts and the fixes."""
    if estimated.peak <= max_memory:
        return
    gib = 2**30
    parts = ", ".join(f"{name.replace('_', ' ')} {size / gib:.2f} GiB" for name, size in asdict(estimated).items())
    raise MemoryBudgetError(
        f"a streamed run needs about {estimated.peak / gib:.2f} GiB ({parts}) but max_memory is "
        f"{max_memory / gib:.2f} GiB; use fewer num_samples or a shorter seq_len, keep activations in bf16 "
        "(activations_dtype=torch.bfloat16), use wanda instead of sparsegpt (no Hessians), or raise max_memory"
    )


def in_memory_peak(checkpoint_bytes: int) -> int:
    """What pruning the model in memory is expected to take."""
    return int(IN_MEMORY_FACTOR * checkpoint_bytes) + RUNTIME_BYTES


def needs_streaming(checkpoint: int | str | os.PathLike[str], available: int | None = None) -> bool:
    """True when pruning ``checkpoint`` (a directory, or its size in bytes) in memory would not fit in
    ``available`` bytes (default: the memory available now)."""
    size = checkpoint if isinstance(checkpoint, int) else Checkpoint(checkpoint).nbytes()
    available = available_memory() if available is None else available
    return in_memory_peak(size) > available


def _in_out(module: nn.Module) -> tuple[int, int]:
    weight = module.weight
    out_dim, in_dim = io_dims(module, weight)
    return int(weight.shape[in_dim]), int(weight.shape[out_dim])


def _hidden_size(block: nn.Module, fallback: int) -> int:
    """The width of the hidden states between blocks: the block's first norm's size, else its widest input."""
    for module in block.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 1:
            return int(weight.shape[0])
    return fallback


def available_memory() -> int:
    """Memory the system can give now without swapping: Linux's MemAvailable, else the free physical pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
