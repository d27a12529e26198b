"""Prune a checkpoint larger than memory: :func:`prune_streaming`.

    report = secateurs.streaming.prune_streaming("llama-7b/", "llama-7b-wanda/", "english", 0.5)
    report = secateurs.streaming.prune_streaming(src, out, texts, method="sparsegpt", granularity="2:4",
                                                 max_memory="4GB", activations_dtype=torch.bfloat16)

The checkpoint's model is built on the meta device and :func:`secateurs.prune_with_data` prunes it with a
walker (:mod:`.walk`) that reads each block from disk for its turn and writes it once pruned, so the
statistics, the pruning and the report are those of the in-memory path, and the peak memory is about one
block, its statistics and the calibration activations (:mod:`.memory`), whatever the depth.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secateurs.core.patterns import Pattern, parse_pattern
from secateurs.data import (
    Calibration,
    DataPruneReport,
    load_calibration,
    prune_with_data,
)
from secateurs.data.allocation import OWL_LAMBDA, OWL_M
from secateurs.data.methods import Needs, get_method
from secateurs.data.sequential import BlockStack, block_stack
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.storage.weights import FileFormat
from secateurs.streaming.checkpoint import Checkpoint
from secateurs.streaming.memory import (
    MemoryEstimate,
    check_budget,
    estimate,
    parse_memory,
)
from secateurs.streaming.skeleton import Placement, build_skeleton
from secateurs.streaming.walk import STEPS, BlockTiming, StreamingWalk
from secateurs.streaming.writer import ShardWriter


@dataclass
class StreamReport:
    """What a streamed run did: the pruning report, where the output is, and where time and memory went."""

    prune: DataPruneReport
    out_dir: Path
    memory: MemoryEstimate
    blocks: list[BlockTiming] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0

    def step_seconds(self) -> dict[str, float]:
        """Seconds per step (read, forward, prune, recompute, write), summed over the blocks of this run."""
        return step_seconds(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prune": self.prune.to_dict(), "out_dir": str(self.out_dir), "memory": self.memory.to_dict(),
            "blocks": [{"block": b.block, **b.seconds} for b in self.blocks], "resumed_from": self.resumed_from,
            "seconds": self.seconds, "step_seconds": self.step_seconds(),
        }  # fmt: skip


def step_seconds(blocks: Iterable[BlockTiming]) -> dict[str, float]:
    """Seconds per step (read, forward, prune, recompute, write), summed over ``blocks``."""
    timings = list(blocks)
    return {step: sum(b.seconds[step] for b in timings) for step in STEPS}


def prune_streaming(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    calibration: Any = None,
    amount: float | None = None,
    *,
    method: str = "wanda",
    granularity: str | Pattern = "unstructured",
    allocation: str = "uniform",
    scope: str | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    per_layer: Mapping[str, float] | None = None,
    tokenizer: Any = None,
    num_samples: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    unit: str = "auto",
    owl_lambda: float = OWL_LAMBDA,
    owl_m: float = OWL_M,
    block_size: int = 128,
    damping: float = 0.01,
    device: torch.device | str | None = None,
    progress: bool = True,
    allow_noop: bool = False,
    max_memory: int | str | None = None,
    activations_dtype: torch.dtype | None = None,
    weights_format: FileFormat = "dense",
    resume: bool = True,
    on_block: Callable[[BlockTiming], None] | None = None,
) -> StreamReport:
    """Prune the Hugging Face checkpoint in ``checkpoint_dir`` (safetensors) block by block into ``out_dir``.

    The options are :func:`secateurs.prune_with_data`'s (every method that prunes block by block: wanda,
    sparsegpt, magnitude, activation; N:M; OWL; ``per_layer`` amounts such as a sensitivity allocation).
    ``max_memory`` (bytes or ``"4GB"``) refuses, before any work, a run whose estimated peak exceeds it.
    ``activations_dtype=torch.bfloat16`` keeps the calibration activations in bf16 between blocks, halving
    them. The output is a Hugging Face directory (config, tokenizer files, one safetensors shard per block
    and an index) in the checkpoint's dtype, ``weights_format="sparse"`` storing shards in secateurs'
    sparse bitmask form. A run killed midway continues from its last finished block when called again
    with the same arguments (``resume=False`` starts over). ``on_block(timing)`` is called after each
    block is written, with its :class:`~secateurs.streaming.BlockTiming`.
    """
    started = time.perf_counter()
    _check_options(method, allocation, scope, activations_dtype, weights_format)
    checkpoint = Checkpoint(checkpoint_dir)
    model = build_skeleton(checkpoint)
    stack = block_stack_of(model)
    placement = Placement(model, checkpoint)
    chosen = get_method(method)
    data = None
    if chosen.needs is not Needs.NOTHING or allocation == "owl":
        if calibration is None:
            raise PruningError(f"{method} with {allocation} allocation needs calibration data; pass calibration=...")
        data = load_calibration(calibration, model, tokenizer=tokenizer, num_samples=num_samples, seq_len=seq_len,
                                batch_size=batch_size, seed=seed, unit=unit)  # fmt: skip
    memory = estimate_peak(stack, placement, checkpoint, chosen.needs, data, activations_dtype)
    if max_memory is not None:
        check_budget(memory, parse_memory(max_memory))
    writer = ShardWriter(out_dir, len(stack.blocks) + 1, weights_format)
    options = {
        "method": method, "amount": amount, "granularity": repr(parse_pattern(granularity)), "allocation": allocation,
        "scope": scope, "include": include, "exclude": exclude, "per_layer": per_layer, "owl": (owl_lambda, owl_m),
        "solver": (block_size, damping), "activations_dtype": str(activations_dtype), "format": weights_format,
    }  # fmt: skip
    walk = StreamingWalk(
        placement, stack, writer, settings_fingerprint(checkpoint, data, options),
        dense_passes=int(allocation == "owl"), activations_dtype=activations_dtype, resume=resume, on_block=on_block,
    )  # fmt: skip
    writer.prepare(resume)
    report = prune_with_data(
        model, data, amount, method=method, granularity=granularity, allocation=allocation, scope=scope,
        include=include, exclude=exclude, per_layer=per_layer, owl_lambda=owl_lambda, owl_m=owl_m,
        block_size=block_size, damping=damping, device=device, progress=progress, allow_noop=allow_noop, walker=walk,
    )  # fmt: skip
    _finish(writer, checkpoint, walk)
    return StreamReport(report, writer.out_dir, memory, walk.timings, walk.resumed_from, time.perf_counter() - started)


def _check_options(method: str, allocation: str, scope: str | None, activations_dtype: Any, weights_format: str) -> None:
    """Refuse what streaming cannot do, before the checkpoint is read."""
    needs = get_method(method).needs
    if needs is Needs.GRADIENTS:
        raise UnsupportedOperationError(
            f"{method} needs gradients through the whole model, which streaming never holds; use wanda or sparsegpt"
        )
    if scope == "global":
        raise PruningError("scope='global' ranks the whole model at once, but streaming sees one block at a time; "
                           "use scope='row' or 'local'")  # fmt: skip
    if activations_dtype is not None and not (isinstance(activations_dtype, torch.dtype) and activations_dtype.is_floating_point):
        raise PruningError(f"activations_dtype must be a floating torch dtype such as torch.bfloat16, got {activations_dtype!r}")
    if weights_format not in ("dense", "sparse"):
        raise PruningError(f"weights_format must be 'dense' or 'sparse', got {weights_format!r}")


def block_stack_of(model: torch.nn.Module) -> BlockStack:
    """The skeleton's stack of repeated blocks; refuses a model without one (nothing to walk block by block)."""
    stack = block_stack(model)
    if stack.whole_model:
        raise UnsupportedOperationError(
            f"{type(model).__name__} has no stack of repeated blocks to stream; prune it in memory with prune_with_data"
        )
    return stack


def estimate_peak(stack: BlockStack, placement: Placement, checkpoint: Checkpoint, needs: Needs,
              data: Calibration | None, activations_dtype: torch.dtype | None) -> MemoryEstimate:  # fmt: skip
    """The run's peak, from the headers, the skeleton's shapes and the calibration set's size."""
    block_bytes = max(checkpoint.nbytes(placement.keys(placement.names_under(stack.block_name(i) + ".")))
                      for i in range(len(stack.blocks)))  # fmt: skip
    outside = checkpoint.nbytes(placement.keys(placement.names_outside(stack.name + ".")))
    tokens = [_tokens(batch) for batch in data] if data is not None else [0]
    itemsize = (activations_dtype or torch.float32).itemsize if activations_dtype else max(4, checkpoint.dtype.itemsize)
    return estimate(stack.blocks[0], block_bytes, outside, needs, sum(tokens), max(tokens), itemsize)


def _tokens(batch: Any) -> int:
    if batch.token_mask is not None:
        return batch.token_mask.numel()
    ids = batch.kwargs.get("input_ids")
    return ids.numel() if isinstance(ids, torch.Tensor) else batch.num_samples


def settings_fingerprint(checkpoint: Checkpoint, data: Calibration | None, options: dict[str, Any]) -> str:
    """A fingerprint of everything that decides the output: a resumed run must share it."""
    digest = hashlib.sha256()
    for key, info in checkpoint.tensors.items():
        digest.update(f"{key}{info.shape}{info.dtype}".encode())
    for batch in data or ():
        for value in (*batch.args, *batch.kwargs.values()):
            if isinstance(value, torch.Tensor):
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return json.dumps({**options, "inputs": digest.hexdigest()}, sort_keys=True, default=str)


def _finish(writer: ShardWriter, checkpoint: Checkpoint, walk: StreamingWalk) -> None:
    """Write the last shard (every checkpoint tensor outside the blocks, unchanged), then the index."""
    shard_keys = [walk.placement.keys(walk.block_names(i)) for i in range(len(walk.stack.blocks))]
    in_blocks = {key for keys in shard_keys for key in keys}
    rest = [key for key in checkpoint.tensors if key not in in_blocks]
    writer.write_shard(len(shard_keys), checkpoint.read(rest))
    writer.finish(checkpoint, [*shard_keys, rest])
