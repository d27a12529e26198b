"""Depth pruning of a checkpoint larger than memory: :func:`prune_streaming_depth`.

    report = secateurs.streaming.prune_streaming_depth("llama-7b/", "llama-7b-28/", "english", amount=4)

One streamed pass measures each block's influence on the calibration activations: ``1 - cos`` of the
hidden states entering and leaving it, averaged over tokens (ShortGPT's block influence, measured by the
data layer's :class:`~secateurs.data.allocation.InfluenceMeter` as :func:`secateurs.data.block_influence`
does in memory). Each block is read from disk for its turn and freed, as in :func:`prune_streaming`. The
``amount`` least influential blocks outside ``exclude`` are left out of the output. That output is written one
block at a time: the kept blocks are renumbered, and the config's layer count and per-layer lists are
trimmed. Peak memory is about one block plus the calibration activations, whatever the depth. A run killed
during the influence pass continues from its last measured block (the state after each block keeps the
activations and the influences so far); one killed while writing writes the output again.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.core.selection import name_matcher
from secateurs.data import Calibration, load_calibration
from secateurs.data.allocation import InfluenceMeter
from secateurs.data.methods import Needs
from secateurs.data.sequential import BlockStack
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.streaming.checkpoint import Checkpoint
from secateurs.streaming.memory import MemoryEstimate, check_budget, parse_memory
from secateurs.streaming.pruning import block_stack_of, estimate_peak, settings_fingerprint, step_seconds
from secateurs.streaming.skeleton import Placement, build_skeleton
from secateurs.streaming.walk import BlockTiming, StreamingWalk
from secateurs.streaming.writer import ShardWriter


@dataclass
class DepthReport:
    """What a streamed depth pruning did: each block's influence, the blocks left out, and its cost."""

    influence: dict[str, float]
    dropped: list[str]
    out_dir: Path
    memory: MemoryEstimate
    blocks: list[BlockTiming] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return len(self.influence) - len(self.dropped)

    def step_seconds(self) -> dict[str, float]:
        """Seconds per step of the influence pass (read, forward, recompute...), summed over the blocks."""
        return step_seconds(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "influence": self.influence, "dropped": self.dropped, "kept": self.kept, "out_dir": str(self.out_dir),
            "memory": self.memory.to_dict(), "blocks": [{"block": b.block, **b.seconds} for b in self.blocks],
            "resumed_from": self.resumed_from, "seconds": self.seconds, "step_seconds": self.step_seconds(),
        }  # fmt: skip


def prune_streaming_depth(
    checkpoint_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    calibration: Any,
    amount: int | float,
    *,
    exclude: str | Iterable[str] | None = None,
    tokenizer: Any = None,
    num_samples: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    unit: str = "auto",
    device: torch.device | str | None = None,
    progress: bool = True,
    max_memory: int | str | None = None,
    activations_dtype: torch.dtype | None = None,
    resume: bool = True,
    on_block: Callable[[BlockTiming], None] | None = None,
) -> DepthReport:
    """Remove the ``amount`` least influential blocks of the Hugging Face checkpoint in ``checkpoint_dir``
    (safetensors), writing the shallower model to ``out_dir``; the checkpoint is never loaded whole.

    ``amount`` is a number of blocks, or a fraction of them (``0.25``). ``exclude`` (globs or ``re:``
    patterns, matching a block's name or a parameter inside it, e.g. ``"model.layers.0"``) keeps blocks.
    The calibration options are :func:`secateurs.data.load_calibration`'s. ``max_memory`` and
    ``activations_dtype`` are :func:`prune_streaming`'s. The output is a Hugging Face directory that plain
    ``from_pretrained`` loads: each shard is written atomically, and the index is written last. A killed run
    continues from its last measured block when called again with the same arguments (``resume=False`` starts
    over); ``on_block(timing)`` is called after each block of the influence pass.
    """
    started = time.perf_counter()
    checkpoint = Checkpoint(checkpoint_dir)
    model = build_skeleton(checkpoint)
    stack = block_stack_of(model)
    placement = Placement(model, checkpoint)
    _check_config(model, stack)
    candidates = _candidates(stack, placement, exclude)
    count = _drop_count(amount, len(stack.blocks), len(candidates))
    data = load_calibration(calibration, model, tokenizer=tokenizer, num_samples=num_samples, seq_len=seq_len,
                            batch_size=batch_size, seed=seed, unit=unit)  # fmt: skip
    memory = estimate_peak(stack, placement, checkpoint, Needs.NOTHING, data, activations_dtype)
    if max_memory is not None:
        check_budget(memory, parse_memory(max_memory))
    writer = ShardWriter(out_dir, len(stack.blocks) - count + 1)
    options = {"depth": count, "candidates": candidates, "activations_dtype": str(activations_dtype)}
    walk = StreamingWalk(
        placement, stack, writer, settings_fingerprint(checkpoint, data, options), activations_dtype=activations_dtype,
        resume=resume, on_block=on_block, write_blocks=False,
    )  # fmt: skip
    writer.prepare(resume)
    influence = _influence(model, walk, data, device, progress)
    dropped = set(sorted(candidates, key=influence.__getitem__)[:count])
    kept = [index for index in range(len(stack.blocks)) if stack.block_name(index) not in dropped]
    shard_keys = _write_blocks(writer, placement, stack, kept)
    writer.finish(checkpoint, shard_keys, config=_trimmed_config(model, kept))
    dropped_in_order = [name for name in influence if name in dropped]
    return DepthReport(influence, dropped_in_order, writer.out_dir, memory, walk.timings, walk.resumed_from,
                       time.perf_counter() - started)


def _check_config(model: nn.Module, stack: BlockStack) -> None:
    """The config must count the blocks (``num_hidden_layers``), or the output's config could not be trimmed."""
    layers = getattr(model.config, "num_hidden_layers", None)
    if layers != len(stack.blocks):
        raise UnsupportedOperationError(
            f"{type(model).__name__}'s config counts {layers} layers for {len(stack.blocks)} blocks in {stack.name}; "
            "streamed depth pruning needs num_hidden_layers to count them: remove blocks in memory with "
            "secateurs.shrink(..., granularity='layer')"
        )


def _candidates(stack: BlockStack, placement: Placement, exclude: str | Iterable[str] | None) -> list[str]:
    """Names of the blocks that may be dropped: those no ``exclude`` pattern names (the block, or a parameter in it)."""
    patterns = [exclude] if isinstance(exclude, str) else list(exclude or [])
    matchers = [name_matcher(pattern) for pattern in patterns]
    names = [stack.block_name(index) for index in range(len(stack.blocks))]
    return [
        name for name in names
        if not any(matches(inner) for matches in matchers for inner in (name, *placement.names_under(name + ".")))
    ]  # fmt: skip


def _drop_count(amount: int | float, blocks: int, candidates: int) -> int:
    """How many blocks ``amount`` asks for; refuses none, all of them, and more than ``exclude`` leaves."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
        raise PruningError(f"amount must be a number of blocks (2) or a fraction of them (0.25), got {amount!r}")
    count = amount if isinstance(amount, int) else round(amount * blocks)
    if isinstance(amount, float) and not (count >= 1 and amount < 1):
        raise PruningError(f"amount={amount} of {blocks} blocks is {count} blocks; give a fraction between "
                           f"{1 / blocks:.3g} and 1, or a number of blocks")  # fmt: skip
    if count >= blocks:
        raise PruningError(f"amount={amount} would remove all {blocks} blocks; keep at least one")
    if count > candidates:
        raise PruningError(f"amount={amount} asks for {count} blocks, but exclude leaves only {candidates} to drop; "
                           "exclude fewer")  # fmt: skip
    return count


def _influence(model: nn.Module, walk: StreamingWalk, data: Calibration, device: Any, progress: bool) -> dict[str, float]:
    """Each block's influence, in block order, from one streamed walk that writes no block (a resumed walk
    brings the influences measured before it stopped)."""
    for step in walk(model, data, device=device, progress=progress, desc="block influence"):
        meter = InfluenceMeter()
        step.advance(observe=meter)
        walk.results[step.name] = meter.value
    return dict(walk.results)


def _write_blocks(writer: ShardWriter, placement: Placement, stack: BlockStack, kept: list[int]) -> list[list[str]]:
    """Write each kept block under its new index, one shard each, then everything outside the blocks unchanged;
    returns each shard's keys."""
    checkpoint = placement.checkpoint
    shard_keys: list[list[str]] = []
    for new, old in enumerate(kept):
        renamed = _renamed_keys(placement, stack, old, new)
        tensors = checkpoint.read(renamed)
        writer.write_shard(new, {renamed[key]: tensor for key, tensor in tensors.items()})
        shard_keys.append(list(renamed.values()))
    in_blocks = set(placement.keys(placement.names_under(stack.name + ".")))
    rest = [key for key in checkpoint.tensors if key not in in_blocks]
    writer.write_shard(len(kept), checkpoint.read(rest))
    return [*shard_keys, rest]


def _renamed_keys(placement: Placement, stack: BlockStack, old: int, new: int) -> dict[str, str]:
    """Checkpoint keys of block ``old``, each mapped to its key as block ``new`` (however the checkpoint spells
    the base model's prefix)."""
    prefix = stack.block_name(old) + "."
    renamed: dict[str, str] = {}
    for name in placement.names_under(prefix):
        key, tail = placement.key_of[name], name[len(prefix) :]
        block_key = key[: len(key) - len(tail)]  # the checkpoint's spelling of "model.layers.<old>."
        renamed[key] = block_key[: -len(f"{old}.")] + f"{new}.{tail}"
    return renamed


def _names_no_layers(key: str) -> bool:
    """Config lists that may happen to be as long as the layer count without being per layer."""
    return key == "architectures" or key.endswith(("_token_id", "_token_ids"))


def _trimmed_config(model: nn.Module, kept: list[int]) -> str:
    """config.json of the shallower model: the layer count, and every per-layer list (``layer_types``...) cut to
    the kept blocks."""
    config = copy.deepcopy(model.config)
    layers = config.num_hidden_layers
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == layers and not _names_no_layers(key):
            setattr(config, key, [value[index] for index in kept])
    config.num_hidden_layers = len(kept)
    return config.to_json_string()
