"""The seed ViT study's question for any stack of blocks: which blocks are fragile, and does sparing them help?

For a model built as a stack of repeated blocks (transformer layers: the ``ModuleList`` that
:func:`secateurs.data.sequential.find_blocks` finds), each block alone is pruned at each amount (every
prunable weight inside it loses that fraction of its output rows, by the method's criterion: the seed's L2
structured pruning) and the metric evaluated: a :class:`SensitivityResult` with one curve per block. Then
two copies are pruned at the study's amount: every block, and every block but the ``exclude`` most
fragile ones (the seed kept its first and last blocks dense). With training data both are fine-tuned too
(one-shot, then :func:`secateurs.recovery.recover`'s fine-tuning), which answers how much of the loss
fine-tuning wins back. Embeddings, the stem and the output layer stay dense throughout, as in the seed.
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
from secateurs.analysis.result import SensitivityResult, UnitCurve
from secateurs.analysis.study_result import BlockStudy, BlockVariant
from secateurs.core.criteria import get_criterion
from secateurs.core.engine import prune
from secateurs.core.selection import select
from secateurs.data.sequential import find_blocks
from secateurs.demo.sweep import DemoMethod
from secateurs.errors import UnsupportedOperationError
from secateurs.measure import count_params
from secateurs.recovery import recover


@dataclass(frozen=True)
class BlockPlan:
    """The block study's settings (see the module docstring); ``epochs`` 0 skips fine-tuning."""

    method: DemoMethod
    amounts: Sequence[float]
    amount: float
    exclude: int
    epochs: int
    lr: float
    seed: int


def block_names(model: nn.Module) -> list[str] | None:
    """The names of the model's repeated blocks (``blocks.0``...), or None when it has none."""
    try:
        name, blocks = find_blocks(model)
    except UnsupportedOperationError:
        return None
    return [f"{name}.{index}" if name else str(index) for index in range(len(blocks))]


def run_block_study(model: nn.Module, metric: Metric, names: list[str], dense: float, plan: BlockPlan,
                    training_data: tuple[Any, Any] | None, progress: bool) -> BlockStudy:
    """Per-block sensitivity, then every block pruned against the fragile ones kept (see the module docstring)."""
    scan = _scan(model, metric, names, dense, plan, progress)
    fragile = scan.most_sensitive(plan.exclude)
    variants = [BlockVariant("every block pruned", [], 0.0),
                BlockVariant(f"{len(fragile)} most fragile kept dense", fragile, 0.0)]
    epochs = plan.epochs if training_data is not None else 0
    for variant in tqdm(variants, desc="study: blocks spared", unit="variant", disable=not progress):
        include = [f"{name}.*" for name in names if name not in variant.kept]
        variant.value = metric(_pruned(model, plan, plan.amount, include))
        if epochs:
            variant.finetuned = _finetuned(model, metric, plan, include, training_data)  # type: ignore[arg-type]
    return BlockStudy(scan, plan.amount, plan.method.label, fragile, variants, epochs)


def _pruned(model: nn.Module, plan: BlockPlan, amount: float, include: list[str]) -> nn.Module:
    pruned = copy.deepcopy(model)
    criterion = get_criterion(plan.method.criterion, seed=plan.seed)
    prune(pruned, amount, method=criterion, granularity=plan.method.granularity, include=include, allow_noop=True)
    return pruned


def _finetuned(model: nn.Module, metric: Metric, plan: BlockPlan, include: list[str],
               training_data: tuple[Any, Any]) -> float:
    train, test = training_data
    result = recover(
        copy.deepcopy(model), train, test, amount=plan.amount, epochs=plan.epochs, schedule="oneshot",
        method=get_criterion(plan.method.criterion, seed=plan.seed), granularity=plan.method.granularity,
        prune_options={"include": include}, lr=plan.lr, seed=plan.seed,
    )  # fmt: skip
    return metric(result.model)


def _scan(model: nn.Module, metric: Metric, names: list[str], dense: float, plan: BlockPlan,
          progress: bool) -> SensitivityResult:
    """One curve per block: the metric with that block alone pruned at each amount."""
    started = time.perf_counter()
    bar = tqdm(total=len(names) * len(plan.amounts), desc="study: block sensitivity", unit="eval", disable=not progress)
    curves = []
    with bar:
        for name in names:
            params = sum(target.param.numel() for target in select(model, include=f"{name}.*").targets)
            curve = UnitCurve(name, "block", params, params)
            for amount in plan.amounts:
                pruned = _pruned(model, plan, amount, [f"{name}.*"])
                removed = _zeros(pruned) - _zeros(model)
                curve.add(amount, metric(pruned), removed, removed)
                bar.update()
            curves.append(curve)
    return SensitivityResult(
        metric=metric.name, higher_is_better=metric.higher_is_better, unit=metric.unit, granularity="block",
        method=plan.method.label, dense=dense, amounts=list(plan.amounts), curves=curves,
        model_params=count_params(model), evaluations=len(names) * len(plan.amounts) + 1,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def _zeros(model: nn.Module) -> int:
    return sum(int((p.detach() == 0).sum()) for p in model.parameters())
