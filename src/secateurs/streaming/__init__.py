"""Prune checkpoints larger than memory: a meta-device skeleton, each block read from disk, pruned by the
data layer's methods, written to its own shard and freed (:func:`prune_streaming`)."""

from secateurs.streaming.checkpoint import Checkpoint, CheckpointError
from secateurs.streaming.memory import (
    MemoryBudgetError,
    MemoryEstimate,
    in_memory_peak,
    needs_streaming,
)
from secateurs.streaming.pruning import StreamReport, prune_streaming
from secateurs.streaming.walk import BlockTiming
from secateurs.streaming.writer import ResumeError

__all__ = [
    "BlockTiming",
    "Checkpoint",
    "CheckpointError",
    "MemoryBudgetError",
    "MemoryEstimate",
    "ResumeError",
    "StreamReport",
    "in_memory_peak",
    "needs_streaming",
    "prune_streaming",
]
