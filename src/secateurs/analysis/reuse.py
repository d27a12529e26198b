"""Evaluating a scan's perturbations, reusing the activations that enter the perturbed block where it can.

A perturbation first used in block ``k`` of a stack of repeated blocks (a transformer's layers, found as
:func:`secateurs.data.sequential.find_blocks` finds them) leaves blocks ``0..k-1`` computing exactly what
they did on the dense model. When the metric is an :class:`~secateurs.analysis.metrics.OutputMetric` (its
value comes from the model's outputs on fixed batches held in memory, as the proxy's, perplexity's and
STS's do), those blocks need not run: for the evaluation each of them returns, batch by batch, what block
``k-1`` returned on the dense model, so only the stem (embeddings), blocks ``k..`` and the head run.

A unit's *level* ``k`` is the number of blocks that finish before any of its modules is first called (timed
during the dense evaluation), so units in the stem, and channel groups spanning the residual stream, have
level 0 and run whole. Units are scanned in level order and only one level of activations is held (one set
of hidden states for the batches); reaching a level runs only the blocks between the previous level and
it, each pass stopped there. The first level reached is checked: the dense model evaluated through it
must give the dense value, else reuse stops and the scan carries on with full passes, saying so in the
result's notes. A user's function ``model -> float`` always runs the whole model: its inputs are not known.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from secateurs.analysis.metrics import Metric, OutputMetric
from secateurs.analysis.units import Unit
from secateurs.data.sequential import find_blocks
from secateurs.errors import UnsupportedOperationError
from secateurs.runtime import inference, model_device


class _Stop(Exception):
    """Ends a forward pass once the block whose output is wanted has run."""


class Evaluator:
    """Full evaluations: the metric of the whole model, whatever the unit."""

    def __init__(self, model: nn.Module, metric: Metric) -> None:
        self.model, self.metric = model, metric
        self.notes: list[str] = []

    def dense(self) -> float:
        """The metric of the model as given, evaluated once before any unit is perturbed."""
        self.dense_value = self.metric(self.model)
        return self.dense_value

    def order(self, units: Iterable[Unit]) -> list[Unit]:
        """The order to scan units in."""
        return list(units)

    def prepare(self, unit: Unit) -> None:
        """Called with the dense model, before ``unit`` is perturbed."""

    def __call__(self, unit: Unit) -> float:
        return self.metric(self.model)


def _detached(value: Any) -> Any:
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, value)


def _cloned(value: Any) -> Any:
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, value)


class ReusingEvaluator(Evaluator):
    """Evaluations that skip the blocks before the perturbed one (see the module docstring)."""

    def __init__(self, model: nn.Module, metric: OutputMetric) -> None:
        super().__init__(model, metric)
        self.output_metric = metric
        self.block_name, blocks = find_blocks(model)
        self.blocks = list(blocks)
        self.first_call: dict[str, int] = {}
        self.finished: list[int] = []
        self.level, self.current = 0, 0
        self.outputs: list[Any] = []
        self.active, self.checked = True, False

    def dense(self) -> float:
        """The dense metric, its first batch timed by one clock: when each module is first called and when
        each block finishes. Reuse needs every block to run once, in order."""
        with self._clock() as (first, finished):
            self.dense_value = self.output_metric(self.model, before_batch=self._select)
        ends = [calls[0] if len(calls) == 1 else -1 for calls in finished]
        if min(ends) < 0 or ends != sorted(ends):
            self.active = False
            self.notes.append(f"activations not reused: the blocks of {self.block_name} do not run once each, in order")
        self.first_call, self.finished = first, ends
        return self.dense_value

    @contextlib.contextmanager
    def _clock(self) -> Iterator[tuple[dict[str, int], list[list[int]]]]:
        ticks = itertools.count()
        first: dict[str, int] = {}
        finished: list[list[int]] = [[] for _ in self.blocks]

        def called(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any) -> None:
                if self.current == 0:
                    first.setdefault(name, next(ticks))

            return hook

        def done(index: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                if self.current == 0:
                    finished[index].append(next(ticks))

            return hook

        handles = [module.register_forward_pre_hook(called(name))
                   for name, module in self.model.named_modules(remove_duplicate=False)]
        handles += [block.register_forward_hook(done(index)) for index, block in enumerate(self.blocks)]
        try:
            yield first, finished
        finally:
            for handle in handles:
                handle.remove()

    def level_of(self, unit: Unit) -> int:
        calls = [self.first_call[m] for m in unit.modules if m in self.first_call]
        if not calls:
            return 0
        return sum(end < min(calls) for end in self.finished)

    def order(self, units: Iterable[Unit]) -> list[Unit]:
        return sorted(units, key=self.level_of)

    def prepare(self, unit: Unit) -> None:
        level = self.level_of(unit)
        if self.active and level > self.level:
            self._advance(level)

    def __call__(self, unit: Unit) -> float:
        if not self.active or self.level == 0:
            return self.metric(self.model)
        with self._replayed(self.level):
            return self.output_metric(self.model, before_batch=self._select)

    def _select(self, index: int) -> None:
        self.current = index

    def _advance(self, level: int) -> None:
        """Keep what block ``level - 1`` outputs on the dense model (running only the blocks from the current
        level to it); the first time, check that replaying gives the dense value."""
        outputs = self._capture(self.blocks[level - 1])
        if outputs is None:
            self._stop(level, f"block {level - 1} was not reached by every batch")
            return
        self.outputs, self.level = outputs, level
        if self.checked:
            return
        with self._replayed(level):
            value = self.output_metric(self.model, before_batch=self._select)
        self.checked = True
        dense = self.dense_value
        if not abs(value - dense) <= 1e-6 * max(1.0, abs(dense)):
            self._stop(level, f"replaying the blocks before it changed the dense metric ({dense:.6g} -> {value:.6g})")

    def _capture(self, block: nn.Module) -> list[Any] | None:
        """What ``block`` outputs for each batch, each forward pass stopped right after it (None: not reached)."""
        outputs: list[Any] = []

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            outputs.append(_detached(output))
            raise _Stop

        handle = block.register_forward_hook(keep)
        device = model_device(self.model)
        try:
            with self._replayed(self.level), inference(self.model):
                for index, batch in enumerate(self.output_metric.batches):
                    self.current = index
                    with contextlib.suppress(_Stop):
                        batch.to(device).run(self.model)
                    if len(outputs) != index + 1:
                        return None
        finally:
            handle.remove()
        return outputs

    def _stop(self, level: int, why: str) -> None:
        self.active, self.outputs, self.level = False, [], 0
        self.notes.append(f"activation reuse stopped at block {level}: {why}; the rest of the scan ran full passes")

    @contextlib.contextmanager
    def _replayed(self, level: int) -> Iterator[None]:
        """Blocks ``0..level-1`` return, batch by batch, the kept outputs of block ``level - 1``."""
        blocks = self.blocks[:level]
        originals = [block.__dict__.get("forward") for block in blocks]
        for block in blocks:
            block.forward = self._replay
        try:
            yield
        finally:
            for block, original in zip(blocks, originals):
                if original is None:
                    del block.forward
                else:
                    block.forward = original

    def _replay(self, *args: Any, **kwargs: Any) -> Any:
        return _cloned(self.outputs[self.current])


def evaluator(model: nn.Module, metric: Metric, reuse: bool | None) -> Evaluator:
    """A reusing evaluator where reuse applies (``reuse=None``: where it can, ``True``: or an error), else a full one."""
    if reuse is False:
        return Evaluator(model, metric)
    if not isinstance(metric, OutputMetric):
        if reuse:
            raise UnsupportedOperationError(
                "reuse_activations=True needs a metric computed from outputs on fixed inputs (an OutputMetric: "
                "proxy, perplexity, STS); a function model -> float runs the whole model"
            )
        return Evaluator(model, metric)
    try:
        return ReusingEvaluator(model, metric)
    except UnsupportedOperationError:
        if reuse:
            raise
        return Evaluator(model, metric)  # no repeated blocks (a CNN): nothing to reuse, nothing to say
