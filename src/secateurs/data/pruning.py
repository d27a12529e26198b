"""Data-aware pruning of transformers in one call: :func:`prune_with_data`.

    import secateurs
    report = secateurs.prune_with_data(model, "notes.txt", amount=0.5, method="wanda")
    report = secateurs.prune_with_data(model, "english", method="sparsegpt", granularity="2:4")
    report = secateurs.prune_with_data(model, texts, amount=0.7, method="wanda", allocation="owl")

Methods that read layer inputs (Wanda, SparseGPT, activation) walk the model block by block
(:mod:`secateurs.data.sequential`): each block's layer inputs are measured, the block is pruned, and the
*pruned* block's outputs feed the next block, so later blocks are pruned knowing what earlier pruning
did to their inputs. Taylor needs the gradient of a loss through the whole model, so it runs full
forward and backward passes instead. Magnitude needs no data (unless OWL asks for outlier ratios). Only
the linear layers inside the repeated blocks are pruned; the stem (embeddings) and head are reported as
skipped. A model without repeated blocks (a small CNN) is one block: all its layers are pruned, from
statistics of one full pass. What each method needs and does is in :mod:`secateurs.data.methods`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.core.amounts import check_amount, nothing_pruned, per_layer_amounts
from secateurs.core.engine import LayerReport, PruneReport, validate_target
from secateurs.core.patterns import NM, Pattern, parse_pattern
from secateurs.core.selection import Skipped, select
from secateurs.core.targets import Target
from secateurs.data.allocation import OWL_LAMBDA, OWL_M, outlier_ratio, owl_sparsities
from secateurs.data.calibration import Calibration, CalibrationSource, load_calibration
from secateurs.data.criteria import Wanda
from secateurs.data.gradients import LossFn
from secateurs.data.measuring import dense_evidence
from secateurs.data.methods import BlockRequest, DataMethod, Needs, get_method
from secateurs.data.sequential import (
    ActivationMeter,
    BlockStack,
    BlockStep,
    BlockWalker,
    block_stack,
    walk_blocks,
)
from secateurs.data.statistics import InputStatistics
from secateurs.errors import PruningError

ALLOCATIONS = ("uniform", "owl")


@dataclass
class DataPruneReport(PruneReport):
    """A :class:`~secateurs.core.engine.PruneReport` plus the sparsity given to each block and the run's cost."""

    allocation: str = "uniform"
    block_amounts: dict[str, float] = field(default_factory=dict)
    calibration: str = ""
    seconds: float = 0.0
    peak_activation_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            allocation=self.allocation,
            block_amounts=self.block_amounts,
            calibration=self.calibration,
            seconds=self.seconds,
            peak_activation_bytes=self.peak_activation_bytes,
        )
        return data


@dataclass
class _Plan:
    """The targets inside the model's repeated blocks, by block index in order, and what was left out."""

    stack: BlockStack
    by_block: dict[int, list[Target]]
    skipped: list[Skipped]

    @property
    def targets(self) -> list[Target]:
        return [target for targets in self.by_block.values() for target in targets]


@dataclass
class _Run:
    """One checked call: the model, the method and how it prunes each block, and where data runs."""

    model: nn.Module
    method: DataMethod
    request: BlockRequest
    plan: _Plan
    data: Calibration | None
    device: torch.device | str | None
    progress: bool
    meter: ActivationMeter = field(default_factory=ActivationMeter)
    walker: BlockWalker = walk_blocks
    #: Amounts of the targets ``per_layer`` names, by target name.
    overrides: dict[str, float] = field(default_factory=dict)

    def prune(self, targets: list[Target], evidence: Any, amount: float | None) -> list[LayerReport]:
        """Prune one block's targets at ``amount``, those ``per_layer`` names at their own amounts."""
        by_amount: dict[float | None, list[Target]] = {}
        for target in targets:
            by_amount.setdefault(self.overrides.get(target.name, amount), []).append(target)
        return [layer for value, chosen in by_amount.items() for layer in self.method.prune_block(chosen, evidence, value, self.request)]

    def walk(self, desc: str) -> Iterable[BlockStep]:
        """The blocks holding targets, with their calibration inputs."""
        steps = self.walker(
            self.model, self.data, device=self.device, progress=self.progress, desc=desc, meter=self.meter
        )
        return (step for step in steps if step.index in self.plan.by_block)


def prune_with_data(
    model: nn.Module,
    calibration: CalibrationSource | None = None,
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
    input_shape: Sequence[int] | None = None,
    owl_lambda: float = OWL_LAMBDA,
    owl_m: float = OWL_M,
    block_size: int = 128,
    damping: float = 0.01,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    allow_noop: bool = False,
    walker: BlockWalker = walk_blocks,
) -> DataPruneReport:
    """Prune the linear layers of a transformer's blocks using calibration data; returns a report.

    ``method``: ``"wanda"``, ``"sparsegpt"``, ``"taylor"`` (needs a loss: HF causal LMs and ``(x, y)``
    batches have one, otherwise pass ``loss_fn(model, batch)``), ``"magnitude"`` (the data-free
    baseline), ``"activation"`` (structured granularities only), or any method registered with
    :func:`~secateurs.data.register_method`. ``granularity``: ``"unstructured"``, ``"2:4"``/``"4:8"``
    (no amount), or a structured pattern. ``allocation``: ``"uniform"`` or ``"owl"`` (``owl_lambda``,
    ``owl_m``). ``calibration``: anything :func:`~secateurs.data.load_calibration` takes (the task's own
    data first: ``"sts:FILE"``, ``"csv:FILE:COLUMN"``, ``"images:DIR"``...; a text file, ``"english"``, a
    list of strings, tensors, a DataLoader); ``tokenizer``/``num_samples``/``seq_len``/``seed``/``unit``
    shape text sources, ``input_shape`` image folders. ``per_layer`` (patterns as in :func:`secateurs.prune`)
    gives the layers it names their own fraction, e.g. :func:`secateurs.analysis.allocate`'s; ``amount`` is
    then only for the others (and may be left out when every layer is named). SparseGPT's ``block_size`` and ``damping`` default
    to the paper's 128 and 1%. ``device`` moves each block there while it is processed. Bad requests
    raise before the model is touched; ``amount=0`` is one of them unless ``allow_noop``.
    ``walker`` visits the blocks (:func:`~secateurs.data.sequential.walk_blocks` by default); another one,
    such as :mod:`secateurs.streaming`'s that loads each block from disk, makes every method go block by block.
    """
    started = time.perf_counter()
    if not amount and amount is not None and not allow_noop:
        raise nothing_pruned(amount, "weight", None)
    chosen = get_method(method)
    request = _check_request(chosen, parse_pattern(granularity), amount, allocation, scope, block_size, damping,
                             per_layer)
    plan = _plan(model, chosen, request.pattern, include, exclude)
    overrides = _layer_amounts(plan, per_layer, amount, needs_amount=not isinstance(request.pattern, NM))
    data = _calibration_for(
        chosen, allocation, calibration, model,
        tokenizer=tokenizer, num_samples=num_samples, seq_len=seq_len, batch_size=batch_size, seed=seed, unit=unit,
        input_shape=input_shape,
    )  # fmt: skip
    run = _Run(model, chosen, request, plan, data, device, progress, overrides=overrides, walker=walker)
    if allocation == "owl":
        amounts = _owl_amounts(run, float(amount), owl_lambda, owl_m)  # type: ignore[arg-type]
    else:
        amounts = dict.fromkeys(plan.by_block, amount)
    report = DataPruneReport(
        method=method, granularity=repr(request.pattern), scope=request.scope, mode="absolute", skipped=plan.skipped,
        allocation=allocation, calibration=data.description if data is not None else "",
        block_amounts={plan.stack.block_name(i): a for i, a in amounts.items() if a is not None},
    )  # fmt: skip
    if chosen.needs.reads_inputs or walker is not walk_blocks:
        report.layers += _prune_block_by_block(run, amounts)
    else:
        report.layers += _prune_whole_model(run, amounts, amount, loss_fn)
    report.seconds = time.perf_counter() - started
    report.peak_activation_bytes = run.meter.peak
    return report


def _check_request(
    chosen: DataMethod,
    pattern: Pattern,
    amount: Any,
    allocation: str,
    scope: str | None,
    block_size: int,
    damping: float,
    per_layer: Mapping[str, float] | None = None,
) -> BlockRequest:
    """How each block is to be pruned, or a :class:`PruningError` before anything runs."""
    if allocation not in ALLOCATIONS:
        raise PruningError(f"unknown allocation {allocation!r}; use one of {', '.join(ALLOCATIONS)}")
    if per_layer and (isinstance(pattern, NM) or allocation == "owl"):
        raise PruningError("per_layer amounts do not go with N:M (fixed sparsity) or OWL (its own per-block amounts)")
    if isinstance(pattern, NM):
        if amount is not None:
            raise PruningError(f"an N:M pattern fixes the sparsity at 1 - {pattern.n}/{pattern.m}; drop the amount")
        if allocation != "uniform":
            raise PruningError("OWL gives each block its own sparsity, which N:M fixes; use allocation='uniform'")
    elif amount is None and not per_layer:
        raise PruningError("give amount= (a fraction in [0, 1]) to prune, or per_layer amounts")
    elif amount is not None and not isinstance(check_amount(amount), float):
        raise PruningError("data-aware pruning takes the amount as a fraction in [0, 1], not a count")
    scope = chosen.resolve_scope(pattern, scope)
    if scope == "global" and per_layer:
        raise PruningError("scope='global' ranks all layers together, which per_layer amounts replace; drop one")
    if scope == "global" and (chosen.needs.reads_inputs or allocation == "owl"):
        why = "OWL sets per-block sparsities" if allocation == "owl" else f"{chosen.name} sees one block at a time"
        raise PruningError(f"scope='global' ranks the whole model at once, but {why}; use scope='row' or 'local'")
    return BlockRequest(pattern, scope, block_size, damping)


def _layer_amounts(plan: _Plan, per_layer: Mapping[str, float] | None, amount: float | None, *,
                   needs_amount: bool = True) -> dict[str, float]:
    """The amount of each target ``per_layer`` names; every target needs one when there is no ``amount``
    (unless the pattern fixes the sparsity: N:M)."""
    names = {t.name: (t.name, t.module_name) for t in plan.targets}
    overrides = per_layer_amounts(per_layer, names, what="layer pruned inside the blocks")
    if any(not isinstance(a, float) for a in overrides.values()):
        raise PruningError("data-aware pruning takes per-layer amounts as fractions in [0, 1], not counts")
    missing = [name for name in names if name not in overrides]
    if needs_amount and amount is None and missing:
        raise PruningError(f"no amount for {missing[:4]}: give amount= or per_layer amounts naming them")
    return overrides  # type: ignore[return-value]


def _plan(model: nn.Module, chosen: DataMethod, pattern: Pattern, include: Any, exclude: Any) -> _Plan:
    selection = select(model, include=include, exclude=exclude)
    stack = block_stack(model)
    by_block: dict[int, list[Target]] = {}
    skipped = list(selection.skipped)
    for target in selection.targets:
        index = stack.index_of(target.module_name)
        if index is None:
            reason = f"outside the repeated blocks ({stack.name}.*): data-aware pruning covers the blocks"
        else:
            reason = _skip_reason(chosen, pattern, target)
        if reason is not None:
            skipped.append(Skipped(target.name, reason))
            continue
        if not target.param.is_meta:  # a walker loading blocks from disk checks them once they hold data
            validate_target(target)
        by_block.setdefault(index, []).append(target)
    if not by_block:
        raise PruningError(
            "nothing to prune inside the model's blocks: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped[:4])
        )
    return _Plan(stack, dict(sorted(by_block.items())), skipped)


def _skip_reason(chosen: DataMethod, pattern: Pattern, target: Target) -> str | None:
    """Why a target inside the blocks is left alone: the method or the pattern cannot prune it."""
    reason = chosen.skip_reason(target)
    if reason is None:
        try:
            pattern.validate(target)
        except PruningError as exc:
            reason = str(exc)
    return reason


def _calibration_for(
    chosen: DataMethod, allocation: str, calibration: CalibrationSource | None, model: nn.Module, **options: Any
) -> Calibration | None:
    """The calibration set, when the method or the allocation reads data."""
    if chosen.needs is Needs.NOTHING and allocation != "owl":
        return None
    if calibration is None:
        raise PruningError(f"{chosen.name} with {allocation} allocation needs calibration data; pass calibration=...")
    return load_calibration(calibration, model, **options)


def _gather(step: BlockStep, modules: Sequence[nn.Module], gram: bool) -> InputStatistics:
    stats = InputStatistics(gram=gram, read_once=True)  # each layer is pruned once: its Hessian goes then
    with stats.watch(modules):
        step.run(on_batch=lambda item: stats.tokens(item.token_mask))
    return stats


def _owl_amounts(run: _Run, amount: float, lam: float, m: float) -> dict[int, float]:
    """A dense walk measuring each block's outlier ratio of Wanda scores, then OWL's sparsities."""
    ratios: dict[int, float] = {}
    for step in run.walk("OWL outliers"):
        targets = run.plan.by_block[step.index]
        wanda = Wanda(_gather(step, [t.module for t in targets], gram=False))
        ratios[step.index] = outlier_ratio((wanda.score(t.param, t) for t in targets), m)
    order = sorted(ratios)
    sizes = [sum(t.param.numel() for t in run.plan.by_block[i]) for i in order]
    return dict(zip(order, owl_sparsities([ratios[i] for i in order], amount, lam, sizes)))


def _prune_block_by_block(run: _Run, amounts: dict[int, float | None]) -> list[LayerReport]:
    """Gather each block's input statistics on inputs that went through the blocks pruned before it, then prune it."""
    layers = []
    for step in run.walk(f"{run.method.name} blocks"):
        targets = run.plan.by_block[step.index]
        if run.walker is not walk_blocks:  # the block was just read from disk: check what _plan could not
            for target in targets:
                validate_target(target)
        if not run.method.needs.reads_inputs:  # a walker that loads blocks one by one, for magnitude
            layers += run.prune(targets, None, amounts[step.index])
            continue
        modules = [t.module for t in targets]
        stats = _gather(step, modules, gram=run.method.needs is Needs.HESSIAN)
        layers += run.prune(targets, stats, amounts[step.index])
        stats.release(modules)
    return layers


def _prune_whole_model(
    run: _Run, amounts: dict[int, float | None], amount: float | None, loss_fn: LossFn | None
) -> list[LayerReport]:
    """Methods whose evidence comes from the whole dense model (none for magnitude, gradients for Taylor);
    scope ``"global"`` ranks all targets as one block."""
    targets = run.plan.targets
    evidence = dense_evidence(run.method.needs, run.model, run.data, [t.param for t in targets], loss_fn)
    if run.request.scope == "global":
        return run.method.prune_block(targets, evidence, amount, run.request)
    layers = []
    for index, block in run.plan.by_block.items():
        layers += run.prune(block, evidence, amounts[index])
    return layers
