"""Prune checkpoints larger than memory: a meta-device skeleton, each block read from disk, pruned by the
data layer's methods, written to its own shard and freed (:func:`prune_streaming`); whole blocks removed by
their influence the same way (:func:`prune_streaming_depth`)."""

from secateurs.streaming.checkpoint import Checkpoint, CheckpointError
from secateurs.streaming.depth import DepthReport, prune_streaming_depth
from secateurs.streaming.memory import (
    MemoryBudgetError,
    MemoryEstimate,
    in_memory_peak,
    needs_streaming,
    parse_memory,
)
from secateurs.streaming.pruning import StreamReport, prune_streaming
from secateurs.streaming.walk import BlockTiming
from secateurs.streaming.writer import ResumeError

__all__ = [
    "BlockTiming",
    "Checkpoint",
    "CheckpointError",
    "DepthReport",
    "MemoryBudgetError",
    "MemoryEstimate",
    "ResumeError",
    "StreamReport",
    "in_memory_peak",
    "needs_streaming",
    "parse_memory",
    "prune_streaming",
    "prune_streaming_depth",
]
