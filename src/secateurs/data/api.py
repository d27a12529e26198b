"""Data-aware pruning of transformers in one call: :func:`prune_with_data`.

    import secateurs
    report = secateurs.prune_with_data(model, "notes.txt", amount=0.5, method="wanda")
    report = secateurs.prune_with_data(model, "english", method="sparsegpt", granularity="2:4")
    report = secateurs.prune_with_data(model, texts, amount=0.7, method="wanda", allocation="owl")

Wanda and SparseGPT walk the model block by block (:mod:`secateurs.sequential`): each block's layer
inputs are measured, the block is pruned, and the *pruned* block's outputs feed the next block, so
later blocks are pruned knowing what earlier pruning did to their inputs. Taylor needs the gradient of
a loss through the whole model, so it runs full forward and backward passes instead. Magnitude needs
no data (unless OWL asks for outlier ratios). Only the linear layers inside the repeated blocks are
pruned; the stem (embeddings) and head are reported as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.core.criteria import Criterion
from secateurs.core.engine import LayerReport, PruneReport, check_amount, prune_targets, validate_target
from secateurs.core.patterns import NM, Pattern, Structured, Unstructured, parse_pattern
from secateurs.core.selection import Skipped, select
from secateurs.core.targets import Target, is_linear_like
from secateurs.data.allocation import OWL_LAMBDA, OWL_M, InfluenceMeter, outlier_ratio, owl_sparsities
from secateurs.data.calibration import Calibration, CalibrationSource, load_calibration
from secateurs.data.criteria import Activation, BlockInfluence, LossFn, Taylor, Wanda, accumulate_gradients
from secateurs.data.sequential import ActivationMeter, BlockStep, find_blocks, walk_blocks
from secateurs.data.sparsegpt import is_supported, prune_layer
from secateurs.data.statistics import InputStatistics
from secateurs.errors import PruningError

METHODS = ("magnitude", "wanda", "sparsegpt", "taylor", "activation")
ALLOCATIONS = ("uniform", "owl")
#: The comparison group each method uses for unstructured pruning unless told otherwise: Wanda's
#: paper compares within output rows; magnitude and Taylor rank each layer as a whole.
DEFAULT_SCOPE = {"wanda": "row", "magnitude": "local", "taylor": "local", "activation": "local"}


@dataclass
class DataPruneReport(PruneReport):
    """A :class:`~secateurs.engine.PruneReport` plus the sparsity given to each block and the run's cost."""

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
    """The targets inside the model's repeated blocks, grouped by block, and what was left out."""

    block_name: str
    blocks: nn.ModuleList
    by_block: dict[int, list[Target]]
    skipped: list[Skipped]


def _check_request(method: str, pattern: Pattern, amount: Any, allocation: str, scope: str | None) -> str | None:
    if method not in METHODS:
        raise PruningError(f"unknown data-aware method {method!r}; use one of {', '.join(METHODS)}")
    if allocation not in ALLOCATIONS:
        raise PruningError(f"unknown allocation {allocation!r}; use one of {', '.join(ALLOCATIONS)}")
    if isinstance(pattern, NM):
        if amount is not None:
            raise PruningError(f"an N:M pattern fixes the sparsity at 1 - {pattern.n}/{pattern.m}; drop the amount")
        if allocation != "uniform":
            raise PruningError("OWL gives each block its own sparsity, which N:M fixes; use allocation='uniform'")
    else:
        if amount is None:
            raise PruningError("give amount= (a fraction in [0, 1]) to prune")
        if not isinstance(check_amount(amount), float):
            raise PruningError("data-aware pruning takes the amount as a fraction in [0, 1], not a count")
    if method == "sparsegpt":
        if not isinstance(pattern, (Unstructured, NM)):
            raise PruningError("SparseGPT prunes unstructured or N:M; for rows/columns use wanda or activation")
        if scope is not None:
            raise PruningError("SparseGPT chooses its own mask block by block; leave scope unset")
        return None
    if method == "activation" and not isinstance(pattern, Structured):
        raise PruningError("activation scores rank whole neurons; use a structured pattern such as 'in'")
    if scope is None:
        scope = DEFAULT_SCOPE[method] if isinstance(pattern, Unstructured) else "local"
    if scope == "global" and (method in ("wanda", "activation") or allocation == "owl"):
        raise PruningError(
            "scope='global' ranks the whole model at once; Wanda/activation see one block at a time and OWL sets "
            "per-block sparsities. Use scope='row' or 'local'"
        )
    return scope


def _plan(model: nn.Module, method: str, pattern: Pattern, include: Any, exclude: Any) -> _Plan:
    selection = select(model, include=include, exclude=exclude)
    block_name, blocks = find_blocks(model)
    prefix = f"{block_name}." if block_name else ""
    by_block: dict[int, list[Target]] = {}
    skipped = list(selection.skipped)
    for target in selection.targets:
        index = _block_index(target, prefix, len(blocks))
        reason = None
        if index is None:
            reason = f"outside the repeated blocks ({block_name}.*): data-aware pruning covers the blocks"
        elif method == "sparsegpt" and not is_supported(target.module):
            reason = f"SparseGPT handles Linear layers, not {type(target.module).__name__}"
        else:
            try:
                pattern.validate(target)
            except PruningError as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append(Skipped(target.name, reason))
            continue
        validate_target(target)
        by_block.setdefault(index, []).append(target)
    if not by_block:
        raise PruningError(
            "nothing to prune inside the model's blocks: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped[:4])
        )
    return _Plan(block_name, blocks, by_block, skipped)


def _block_index(target: Target, prefix: str, count: int) -> int | None:
    if not target.module_name.startswith(prefix):
        return None
    head = target.module_name[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() and int(head) < count else None


def _gather(step: BlockStep, modules: Sequence[nn.Module], gram: bool) -> InputStatistics:
    stats = InputStatistics(gram=gram)
    with stats.watch(modules):
        step.run(on_batch=lambda item: stats.tokens(item.token_mask))
    return stats


def _owl_amounts(
    model: nn.Module, calibration: Calibration, plan: _Plan, amount: float, lam: float, m: float,
    device: Any, progress: bool, meter: ActivationMeter,
) -> dict[int, float]:
    """A dense walk measuring each block's outlier ratio of Wanda scores, then OWL's sparsities."""
    ratios: dict[int, float] = {}
    for step in walk_blocks(model, calibration, device=device, progress=progress, desc="OWL outliers", meter=meter):
        targets = plan.by_block.get(step.index)
        if not targets:
            continue
        stats = _gather(step, [t.module for t in targets], gram=False)
        wanda = Wanda(stats)
        ratios[step.index] = outlier_ratio((wanda.score(t.param, t) for t in targets), m)
    order = sorted(ratios)
    sizes = [sum(t.param.numel() for t in plan.by_block[i]) for i in order]
    return dict(zip(order, owl_sparsities([ratios[i] for i in order], amount, lam, sizes)))


def _sparsegpt_block(targets: Sequence[Target], stats: InputStatistics, pattern: Pattern, amount: float | None,
                     block_size: int, damping: float) -> list[LayerReport]:
    layers = []
    for target in targets:
        param = target.param.detach()
        zeros_before = param.numel() - int(torch.count_nonzero(param))
        n_m = (pattern.n, pattern.m) if isinstance(pattern, NM) else None
        keep = prune_layer(
            target, stats.hessian(target.module, target.name), sparsity=None if n_m else amount, n_m=n_m,
            block_size=block_size, damping=damping,
        )
        param = target.param.detach()
        layers.append(LayerReport(
            name=target.name, shape=tuple(param.shape), groups=keep.numel(), groups_pruned=int((~keep).sum()),
            params=param.numel(), zeros_before=zeros_before, zeros_after=param.numel() - int(torch.count_nonzero(param)),
        ))
    return layers


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
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> DataPruneReport:
    """Prune the linear layers of a transformer's blocks using calibration data; returns a report.

    ``method``: ``"wanda"``, ``"sparsegpt"``, ``"taylor"`` (needs a loss: HF causal LMs and ``(x, y)``
    batches have one, otherwise pass ``loss_fn(model, batch)``), ``"magnitude"`` (the data-free
    baseline), or ``"activation"`` (structured patterns only). ``pattern``: ``"unstructured"``,
    ``"2:4"``/``"4:8"`` (no amount), or a structured pattern. ``allocation``: ``"uniform"`` or
    ``"owl"`` (``owl_lambda``, ``owl_m``). ``calibration``: anything
    :func:`~secateurs.calibration.load_calibration` takes (text file, ``"english"``, list of strings,
    tensors, DataLoader); ``num_samples``/``seq_len``/``seed``/``unit`` shape text sources. SparseGPT's
    ``block_size`` and ``damping`` default to the paper's 128 and 1%. ``device`` moves each block
    there while it is processed. Bad requests raise before the model is touched.
    """
    started = time.perf_counter()
    pattern_obj = parse_pattern(granularity)
    scope = _check_request(method, pattern_obj, amount, allocation, scope)
    plan = _plan(model, method, pattern_obj, include, exclude)
    needs_data = method != "magnitude" or allocation == "owl"
    data = None
    if needs_data:
        if calibration is None:
            raise PruningError(f"{method} with {allocation} allocation needs calibration data; pass calibration=...")
        data = load_calibration(
            calibration, model, tokenizer=tokenizer, num_samples=num_samples, seq_len=seq_len,
            batch_size=batch_size, seed=seed, unit=unit,
        )
    meter = ActivationMeter()
    indices = sorted(plan.by_block)
    if allocation == "owl":
        amounts = _owl_amounts(model, data, plan, float(amount), owl_lambda, owl_m, device, progress, meter)  # type: ignore[arg-type]
    else:
        amounts = {i: amount for i in indices}

    report = DataPruneReport(
        method=method, granularity=repr(pattern_obj), scope=scope or "column blocks", mode="absolute", skipped=plan.skipped,
        allocation=allocation, calibration=data.description if data is not None else "",
        block_amounts={f"{plan.block_name}.{i}": a for i, a in amounts.items() if a is not None},
    )
    if method in ("magnitude", "taylor"):
        criterion: Any = "magnitude"
        if method == "taylor":
            params = [t.param for i in indices for t in plan.by_block[i]]
            criterion = Taylor(accumulate_gradients(model, data, params, loss_fn))  # type: ignore[arg-type]
        if scope == "global":
            targets = [t for i in indices for t in plan.by_block[i]]
            report.layers += prune_targets(targets, amount, method=criterion, granularity=pattern_obj, scope="global").layers
        else:
            for i in indices:
                report.layers += prune_targets(
                    plan.by_block[i], amounts[i], method=criterion, granularity=pattern_obj, scope=scope  # type: ignore[arg-type]
                ).layers
    else:
        desc = f"{method} blocks"
        for step in walk_blocks(model, data, device=device, progress=progress, desc=desc, meter=meter):  # type: ignore[arg-type]
            targets = plan.by_block.get(step.index)
            if not targets:
                continue
            stats = _gather(step, [t.module for t in targets], gram=method == "sparsegpt")
            if method == "sparsegpt":
                report.layers += _sparsegpt_block(targets, stats, pattern_obj, amounts[step.index], block_size, damping)
            else:
                criterion = Wanda(stats) if method == "wanda" else Activation(stats)
                report.layers += prune_targets(
                    targets, amounts[step.index], method=criterion, granularity=pattern_obj, scope=scope  # type: ignore[arg-type]
                ).layers
            stats.release(t.module for t in targets)
    report.seconds = time.perf_counter() - started
    report.peak_activation_bytes = meter.peak
    return report


def collect_input_statistics(
    model: nn.Module,
    calibration: CalibrationSource,
    modules: Iterable[nn.Module] | None = None,
    *,
    gram: bool = False,
    **calibration_options: Any,
) -> InputStatistics:
    """Input statistics of ``modules`` (default: every Linear-like layer) from full forward passes of the
    *dense* model: simple, not sequential. For use with ``secateurs.prune(..., method="wanda", stats=...)``."""

    data = load_calibration(calibration, model, **calibration_options)
    chosen = list(modules) if modules is not None else [m for m in model.modules() if is_linear_like(m)]
    stats = InputStatistics(gram=gram)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with stats.watch(chosen), torch.no_grad():
            for batch in data:
                with stats.tokens(batch.token_mask):
                    batch.run(model)
    finally:
        for module, training in modes.items():
            module.training = training
    return stats


def block_influence(
    model: nn.Module,
    calibration: CalibrationSource,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    **calibration_options: Any,
) -> dict[str, float]:
    """``1 − cos(input, output)`` of each block's hidden states over calibration tokens, keyed by
    block name (lowest first = the first candidates for depth pruning)."""
    data = load_calibration(calibration, model, **calibration_options)
    influence: dict[str, float] = {}
    for step in walk_blocks(model, data, device=device, progress=progress, desc="block influence"):
        meter = InfluenceMeter()
        step.advance(observe=meter)
        influence[step.name] = meter.value
    return dict(sorted(influence.items(), key=lambda item: item[1]))


def available_methods() -> list[str]:
    """The data-aware methods: those that read calibration data (the magnitude baseline does not)."""
    return [name for name in METHODS if name != "magnitude"]


def unit_criterion(
    model: nn.Module,
    calibration: CalibrationSource,
    method: str,
    *,
    granularity: str = "channel",
    num_samples: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Criterion:
    """A criterion that ranks the units :func:`secateurs.shrink` removes, measured on calibration data:
    block influence for ``granularity="layer"``, else Wanda, activation or Taylor scores of each unit."""
    if method not in available_methods():
        raise PruningError(f"unknown data-aware method {method!r}; choose one of {available_methods()}")
    options = {"num_samples": num_samples, "seed": seed}
    if granularity == "layer":
        if method == "taylor":
            raise PruningError("layers are ranked by block influence: use method='activation' (or 'wanda') for layers")
        return BlockInfluence(block_influence(model, calibration, progress=progress, **options))
    if method == "taylor":
        data = load_calibration(calibration, model, **options)
        return Taylor(accumulate_gradients(model, data, list(model.parameters())))
    stats = collect_input_statistics(model, calibration, **options)
    return (Wanda if method == "wanda" else Activation)(stats, missing="zero")
