"""The study's recovery comparison: one-shot pruning against pruning with fine-tuning, on the model's own data.

For each chosen method and amount, a copy of the dense model is pruned and fine-tuned by
:func:`secateurs.recovery.recover`, exactly as ``secateurs prune --finetune EPOCHS --schedule S`` does it
(the same learning rate, :data:`secateurs.recovery.FINETUNE_LR`, and the same schedules): ``finetuned`` prunes
once and then fine-tunes, ``iterative`` and ``gradual`` prune while fine-tuning. The one-shot value without
fine-tuning is the sweep's. Each fine-tuned copy is then scored by the study's metric.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from secateurs.analysis.metrics import Metric
from secateurs.analysis.study_result import RecoveryRow
from secateurs.core.criteria import get_criterion
from secateurs.demo.sweep import DemoMethod
from secateurs.recovery import recover

#: What each mode asks of :func:`recover`: its schedule (``oneshot`` with no fine-tuning is the sweep's).
SCHEDULE_OF_MODE = {"finetuned": "oneshot", "iterative": "iterative", "gradual": "gradual"}
MODES = ("oneshot", *SCHEDULE_OF_MODE)


@dataclass(frozen=True)
class RecoveryPlan:
    """Which copies are fine-tuned, how, and on what data (``training_data`` is ``(train, test)``)."""

    methods: Sequence[DemoMethod]
    amounts: Sequence[float]
    modes: Sequence[str]
    scope: str
    epochs: int
    lr: float
    seed: int

    def jobs(self) -> list[tuple[DemoMethod, float, str]]:
        modes = [mode for mode in self.modes if mode in SCHEDULE_OF_MODE]
        return [(method, amount, mode) for method in self.methods for amount in self.amounts for mode in modes]


def run_recovery(model: nn.Module, metric: Metric, training_data: tuple[Any, Any], inputs: Any,
                 plan: RecoveryPlan, progress: bool) -> list[RecoveryRow]:
    """Every job of ``plan`` on its own copy of ``model``; the dense model is left untouched."""
    train, test = training_data
    rows = []
    bar = tqdm(plan.jobs(), desc="study: fine-tune", unit="run", disable=not progress)
    for method, amount, mode in bar:
        bar.set_postfix_str(f"{method.label} {amount:g} {mode}")
        started = time.perf_counter()
        result = recover(
            copy.deepcopy(model), train, test, amount=amount, epochs=plan.epochs, schedule=SCHEDULE_OF_MODE[mode],
            method=get_criterion(method.criterion, seed=plan.seed), granularity=method.granularity, scope=plan.scope,
            shrink=method.shrink, example_inputs=inputs if method.shrink else None, lr=plan.lr, seed=plan.seed,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        rows.append(RecoveryRow(method.label, plan.scope, amount, mode, metric(result.model), plan.epochs, seconds))
    return rows
