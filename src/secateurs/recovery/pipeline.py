"""Prune and recover in one call, measuring what was lost and what came back (the CLI's ``--finetune``).

    result = recover(model, (x_train, y_train), (x_test, y_test), amount=0.9, epochs=10, schedule="gradual")
    result.to_dict()   # accuracy_dense, accuracy_pruned, accuracy_finetuned, recovered, ...

``accuracy_pruned`` is measured right after the last pruning event, before the fine-tuning that follows
it (for one-shot: right after pruning).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from secateurs.core.patterns import NM, Unstructured, parse_pattern
from secateurs.core.summary import count_params
from secateurs.errors import PruningError
from secateurs.recovery.controller import PruneEvent, PruningController
from secateurs.recovery.distill import Distiller
from secateurs.recovery.loop import Data, EpochLog, as_dataset, epoch_order, fit, top1_accuracy
from secateurs.recovery.schedules import OneShot, Schedule, make_schedule

#: The learning rate ``secateurs prune --finetune`` and studies fine-tune with (AdamW, cosine decay). On the demo
#: CNN, 90% magnitude pruning (local, gradual, 10 epochs) ends 1.5 points higher with it than with 3e-3 (mean of
#: 3 seeds); 50% of channels recover alike with both (benchmarks/results/cli_recovery.md).
FINETUNE_LR = 1e-2


def recovered_fraction(dense: float, pruned: float, finetuned: float) -> float | None:
    """Share of the accuracy lost to pruning that fine-tuning won back (1.0 = all of it; may exceed 1)."""
    lost = dense - pruned
    return None if lost <= 0 else (finetuned - pruned) / lost


@dataclass
class RecoveryResult:
    accuracy_dense: float
    accuracy_pruned: float
    accuracy_finetuned: float
    sparsity: float
    schedule: dict[str, Any]
    unit: str
    epochs: int
    seconds: float
    params_dense: int
    params_final: int
    history: list[EpochLog] = field(default_factory=list)
    events: list[PruneEvent] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def recovered(self) -> float | None:
        return recovered_fraction(self.accuracy_dense, self.accuracy_pruned, self.accuracy_finetuned)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy_dense": self.accuracy_dense,
            "accuracy_pruned": self.accuracy_pruned,
            "accuracy_finetuned": self.accuracy_finetuned,
            "recovered": self.recovered,
            "sparsity": self.sparsity,
            "schedule": self.schedule,
            "unit": self.unit,
            "epochs": self.epochs,
            "seconds": self.seconds,
            "params_dense": self.params_dense,
            "params_final": self.params_final,
            "epoch_seconds": [log.seconds for log in self.history],
            "events": [event.to_dict() for event in self.events],
        }


def _sparsity_to_reach(granularity: str, amount: float | None) -> float:
    """The schedule's final sparsity: ``amount``, or the one an N:M granularity fixes."""
    pattern = parse_pattern(granularity)
    if isinstance(pattern, NM):
        if amount is not None:
            raise PruningError(f"N:M ({granularity}) fixes the sparsity at 1 - {pattern.n}/{pattern.m}; drop the amount")
        return 1 - pattern.n / pattern.m
    if amount is None:
        raise PruningError("give an amount (the sparsity to reach)")
    return amount


def default_scope(granularity: str) -> str:
    """``recover``'s ranking when none is named: unstructured weights compete across the whole model
    (``"global"``: a small layer such as a first convolution keeps what it needs, and fine-tuning recovers 90%
    sparsity to within a point of dense, where per-layer ranking stays 2.4 points below on the demo CNN:
    benchmarks/results/cli_recovery.md); every other pattern is ranked within each layer or group."""
    return "global" if isinstance(parse_pattern(granularity), Unstructured) else "local"


def _schedule(schedule: str | Schedule, unit: str | None, sparsity: float, epochs: int,
              steps_per_epoch: int) -> tuple[Schedule, str]:
    """A Schedule and its unit from a name (sized to the run) or from a Schedule object and its ``unit``."""
    if isinstance(schedule, str):
        if epochs == 0 and schedule.lower() == "oneshot":
            return OneShot(sparsity), "epoch"
        return make_schedule(schedule, sparsity, epochs, steps_per_epoch)
    if unit is None:
        raise PruningError("with a Schedule object, say whether positions count 'epoch's or 'step's (unit=)")
    return schedule, unit


def recover(
    model: nn.Module,
    train: Data,
    test: Data,
    *,
    amount: float | None,
    epochs: int,
    schedule: str | Schedule = "oneshot",
    unit: str | None = None,
    method: str = "magnitude",
    granularity: str = "unstructured",
    scope: str | None = None,
    shrink: bool = False,
    example_inputs: Any = None,
    distill: bool | Distiller = False,
    batch_size: int | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    log: Any = None,
    prune_options: dict[str, Any] | None = None,
    **fit_options: Any,
) -> RecoveryResult:
    """Measure ``model`` on ``test``, prune it to ``amount`` on ``schedule`` (``"oneshot"``, ``"iterative"``,
    ``"gradual"`` or a :class:`Schedule` with its ``unit``) while fine-tuning ``epochs`` on ``train``, and
    measure again. ``scope`` defaults to :func:`default_scope` (global for unstructured, local otherwise).
    ``distill=True`` uses a copy of the dense model as teacher. ``prune_options`` go to the
    :class:`PruningController` and through it to every cut (``include``, ``exclude``, ``per_layer``,
    ``normalize_scores`` (default True, as for :func:`secateurs.prune`), shrink options...); ``fit_options`` go to
    :func:`secateurs.recovery.fit` (``lr``, ``optimizer``, ``weight_decay``, ...). An N:M ``granularity``
    fixes the sparsity (``amount=None``) and is pruned one-shot."""
    sparsity = _sparsity_to_reach(granularity, amount)
    batch_size = batch_size or (train.batch_size if isinstance(train, DataLoader) else None) or 64
    accuracy_dense = top1_accuracy(model, test)
    params_dense = count_params(model)
    distiller = Distiller(copy.deepcopy(model)) if distill is True else (distill or None)
    steps_per_epoch = math.ceil(len(epoch_order(seed, 0, len(as_dataset(train)))) / batch_size)
    schedule_obj, unit = _schedule(schedule, unit, sparsity, epochs, steps_per_epoch)
    controller = PruningController(
        model, schedule_obj, unit=unit, method=method, granularity=granularity,  # type: ignore[arg-type]
        scope=scope or default_scope(granularity),
        shrink=shrink, example_inputs=example_inputs, **(prune_options or {}),
    )
    result = fit(
        model, train, epochs=epochs, controller=controller, eval_data=test, batch_size=batch_size, seed=seed,
        distiller=distiller, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, log=log, **fit_options,
    )
    if result.accuracy_pruned is None:
        raise PruningError(f"the schedule {schedule_obj.to_dict()} never pruned within {epochs} epochs; shorten it")
    return RecoveryResult(
        accuracy_dense=accuracy_dense,
        accuracy_pruned=result.accuracy_pruned,
        accuracy_finetuned=top1_accuracy(result.model, test),
        sparsity=result.events[-1].sparsity if result.events else 0.0,
        schedule=schedule_obj.to_dict(),
        unit=unit,
        epochs=epochs,
        seconds=result.seconds,
        params_dense=params_dense,
        params_final=count_params(result.model),
        history=result.history,
        events=result.events,
        model=result.model,
    )
