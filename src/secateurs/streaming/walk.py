"""The block walk of :func:`secateurs.prune_with_data`, with each block read from disk for its turn.

:class:`StreamingWalk` has :func:`secateurs.data.sequential.walk_blocks`'s signature, so the data layer
gathers statistics and prunes exactly as it does in memory. Around each step it reads the block's
tensors, and once the block is pruned it writes them, runs the pruned block to make the next block's
inputs, saves the resume state and sends the block back to the meta device. Everything outside the
blocks (embeddings, final norm, head) is read only while the calibration inputs are caught, and copied
to the output unchanged.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.core.masks import finalize
from secateurs.data.calibration import Calibration
from secateurs.data.sequential import (
    ActivationMeter,
    BlockInput,
    BlockStack,
    BlockStep,
    capture_inputs,
)
from secateurs.streaming.skeleton import Placement
from secateurs.streaming.writer import ResumeState, ShardWriter

STEPS = ("read", "forward", "prune", "recompute", "write")


@dataclass
class BlockTiming:
    """Seconds one block spent in each step: reading its tensors, the calibration forward with the
    statistics hooks, pruning, recomputing its outputs after pruning, writing its shard and the state."""

    index: int
    block: str
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class StreamingWalk:
    """Visits the blocks of a skeleton model, each loaded from the checkpoint for its turn.

    The first ``dense_passes`` calls (OWL's outlier pass) only read; later calls write each pruned block
    (unless ``write_blocks`` is false: a pass that only measures) and the state after it, and resume from
    ``writer``'s state when it holds one for ``settings``. What a pass measures per block goes in
    :attr:`results`, which the state keeps.
    """

    def __init__(
        self,
        placement: Placement,
        stack: BlockStack,
        writer: ShardWriter,
        settings: str,
        *,
        dense_passes: int = 0,
        activations_dtype: torch.dtype | None = None,
        resume: bool = True,
        on_block: Callable[[BlockTiming], None] | None = None,
        write_blocks: bool = True,
    ) -> None:
        self.placement, self.stack, self.writer, self.settings = placement, stack, writer, settings
        self.dense_passes, self.activations_dtype, self.resume = dense_passes, activations_dtype, resume
        self.on_block, self.write_blocks = on_block, write_blocks
        self.results: dict[str, float] = {}
        self.timings: list[BlockTiming] = []
        self.resumed_from = 0
        self._calls = 0

    def block_names(self, index: int) -> list[str]:
        return self.placement.names_under(self.stack.block_name(index) + ".")

    def outside_names(self) -> list[str]:
        return self.placement.names_outside(self.stack.name + ".")

    def __call__(
        self,
        model: nn.Module,
        calibration: Calibration | None,
        *,
        device: torch.device | str | None = None,
        progress: bool = True,
        desc: str = "blocks",
        meter: ActivationMeter | None = None,
    ) -> Iterator[BlockStep]:
        writing = self._calls >= self.dense_passes
        self._calls += 1
        meter = meter if meter is not None else ActivationMeter()
        state = self.writer.load_state(self.settings) if writing and self.resume else None
        if state is not None:
            start, inputs = state.next_block, state.inputs
            self.resumed_from, self.results = start, dict(state.results)
        else:
            start, inputs = 0, self._capture(model, calibration, device, meter)
        blocks = range(start, len(self.stack.blocks))
        bar = tqdm(blocks, desc=desc, unit="block", disable=not (progress and sys.stderr.isatty()))
        for index in bar:
            yield from self._visit(index, inputs, device, meter, writing)
            if progress and not sys.stderr.isatty():
                last = self.timings[-1]
                print(f"{desc}: block {index + 1}/{len(self.stack.blocks)} done in {last.total:.1f} s "
                      + ", ".join(f"{k} {v:.1f}" for k, v in last.seconds.items()), file=sys.stderr, flush=True)  # fmt: skip

    def _capture(
        self, model: nn.Module, calibration: Calibration | None, device: Any, meter: ActivationMeter
    ) -> list[BlockInput]:
        """The inputs of the first block, with everything outside the blocks loaded only meanwhile."""
        if calibration is None:
            return []
        outside = self.outside_names()
        self.placement.load(outside)
        try:
            inputs = capture_inputs(model, self.stack.blocks[0], calibration, device, meter)
        finally:
            self.placement.free(outside)
        if self.activations_dtype is not None:
            for item in inputs:
                item.with_hidden(item.hidden.to(self.activations_dtype))
        return inputs

    def _visit(self, index: int, inputs: list[BlockInput], device: Any, meter: ActivationMeter, writing: bool
               ) -> Iterator[BlockStep]:  # fmt: skip
        timing = BlockTiming(index, self.stack.block_name(index))
        names = self.block_names(index)
        block = self.stack.blocks[index]
        with _timed(timing, "read"):
            self.placement.load(names, device)
        try:
            step = BlockStep(index, timing.block, block, inputs, meter)
            with self._block_hooks(block) as forward_seconds:
                started = time.perf_counter()
                yield step
                consumed = time.perf_counter() - started
                timing.seconds["forward"] = forward_seconds[0]
                timing.seconds["prune"] = consumed - forward_seconds[0]
                with _timed(timing, "recompute"):
                    step.advance()
            finalize(block)  # the zeros stay; the masks would otherwise pile up, one per pruned weight
            if writing:
                with _timed(timing, "write"):
                    if self.write_blocks:
                        self.writer.write_shard(index, self.placement.state(names))
                    self.writer.save_state(ResumeState(self.settings, index + 1, inputs, dict(self.results)))
        finally:
            self.placement.free(names)
        self.timings.append(timing)
        if writing and self.on_block is not None:
            self.on_block(timing)

    @contextlib.contextmanager
    def _block_hooks(self, block: nn.Module) -> Iterator[list[float]]:
        """Time the block's forward calls before ``advance`` (list of one float), and when activations are
        kept in another dtype, run the block in its own dtype and store its output in theirs."""
        seconds = [0.0]
        started: list[float] = []
        dtype = next(block.parameters()).dtype

        def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            started.append(time.perf_counter())
            if self.activations_dtype is None:
                return args, kwargs
            item = BlockInput(args, dict(kwargs), None)
            item.with_hidden(item.hidden.to(dtype))
            return item.args, item.kwargs

        def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            seconds[0] += time.perf_counter() - started.pop()
            return output if self.activations_dtype is None else _cast_hidden(output, self.activations_dtype)

        handles = [block.register_forward_pre_hook(before, with_kwargs=True),
                   block.register_forward_hook(after, with_kwargs=True)]  # fmt: skip
        try:
            yield seconds
        finally:
            for handle in handles:
                handle.remove()


def _cast_hidden(output: Any, dtype: torch.dtype) -> Any:
    if isinstance(output, torch.Tensor):
        return output.to(dtype)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (output[0].to(dtype), *output[1:])
    return output


@contextlib.contextmanager
def _timed(timing: BlockTiming, step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timing.seconds[step] += time.perf_counter() - started
