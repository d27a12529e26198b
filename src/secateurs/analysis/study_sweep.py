"""The study's sweep: every method at every amount and scope, one pruned copy at a time, each measured.

A method is the demo's (:class:`secateurs.demo.sweep.DemoMethod`: a criterion and a granularity, masked or
physically removed) written as ``CRITERION[:GRANULARITY]``: ``random`` and ``l1`` (unstructured), ``random:channel``
and ``l2:channel`` (whole output channels, masked) are the seed articles' four; ``l2:shrink`` removes the
channels for real (:func:`secateurs.shrink`), the only kind that can run faster. Each copy is measured for the
metric, parameters, nonzeros, MACs (all, and those touching a nonzero weight) and, unless asked not to, its
latency against the dense model, interleaved round by round (:func:`secateurs.measure.compare_latency`); only
one copy is alive at a time. At the detail amount the sweep also keeps each copy's per-layer sparsity and,
for the detail scope, histograms of the chosen layers' weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.analysis.metrics import Metric
from secateurs.analysis.study_result import Histogram, LayerSparsity, SweepRow
from secateurs.core.criteria import get_criterion
from secateurs.core.patterns import NM, parse_pattern
from secateurs.core.selection import select
from secateurs.demo.sweep import METHODS, DemoMethod, prune_copy
from secateurs.errors import PruningError
from secateurs.measure import compare_latency, count_nonzero, count_params, mac_counts

#: The seed articles' four methods, then L2 channels physically removed; each as --methods writes it.
DEFAULT_METHODS = ("random", "l1", "random:channel", "l2:channel", "l2:shrink")
_KNOWN = dict(zip(DEFAULT_METHODS, METHODS))
#: Bins of a weight histogram (fewer for layers of under 600 weights).
HISTOGRAM_BINS = 60


def parse_method(spec: str | DemoMethod) -> DemoMethod:
    """``CRITERION[:GRANULARITY]`` (see the module docstring) as a :class:`DemoMethod`; a clear
    :class:`PruningError` for a criterion or granularity that does not exist or fixes its own amount."""
    if isinstance(spec, DemoMethod):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise PruningError(f"a study method is written CRITERION[:GRANULARITY], e.g. l1 or l2:channel; got {spec!r}")
    spec = spec.strip().lower()
    if spec in _KNOWN:
        return _KNOWN[spec]
    criterion, _, granularity = spec.partition(":")
    get_criterion(criterion)
    if granularity == "shrink":
        return DemoMethod(f"{criterion} channels shrunk", criterion, "channel", shrink=True)
    granularity = granularity or "unstructured"
    if isinstance(parse_pattern(granularity), NM):
        raise PruningError(f"method {spec!r}: N:M fixes its own sparsity, so a sweep over amounts cannot use it")
    return DemoMethod(f"{criterion} {granularity}", criterion, granularity)


def method_spec(method: DemoMethod) -> str:
    """How ``method`` is written (the inverse of :func:`parse_method`)."""
    for spec, known in _KNOWN.items():
        if known == method:
            return spec
    return f"{method.criterion}:{'shrink' if method.shrink else method.granularity}"


@dataclass(frozen=True)
class SweepPlan:
    """What the sweep runs and where it looks closer (see the module docstring)."""

    methods: Sequence[DemoMethod]
    scopes: Sequence[str]
    amounts: Sequence[float]
    detail_amount: float
    detail_scope: str
    histogram_layers: Sequence[str]
    latency: bool
    threads: int
    latency_budget_s: float
    seed: int

    def jobs(self) -> list[tuple[DemoMethod, str, float]]:
        return [(m, s, a) for m in self.methods for s in self.scopes for a in self.amounts]


@dataclass
class SweepOutcome:
    rows: list[SweepRow]
    layer_sparsity: list[LayerSparsity]
    histograms: list[Histogram]
    timing: dict[str, Any]


def pruned_layers(model: nn.Module) -> list[tuple[str, int]]:
    """``(parameter name, elements)`` of the parameters pruned by default, in model order."""
    return [(target.name, target.param.numel()) for target in select(model).targets]


def run_sweep(model: nn.Module, metric: Metric, inputs: Any, plan: SweepPlan, progress: bool) -> SweepOutcome:
    """Prune a copy of ``model`` for every job of ``plan``, measure it, and keep the details asked for."""
    layers = pruned_layers(model)
    outcome = SweepOutcome([], [], [histogram(model, name, "dense") for name in plan.histogram_layers], {})
    rounds: list[int] = []
    spreads: list[float] = []
    bar = tqdm(plan.jobs(), desc="study: prune and measure", unit="copy", disable=not progress)
    for method, scope, amount in bar:
        bar.set_postfix_str(f"{method.label} {scope} {amount:g}")
        pruned = prune_copy(model, method, scope, amount, plan.seed, inputs)
        row = _measured(model, pruned, metric, inputs, plan, rounds, spreads)
        outcome.rows.append(SweepRow(method.label, scope, amount, *row))
        if abs(amount - plan.detail_amount) < 1e-9:
            outcome.layer_sparsity.append(layer_sparsity(pruned, layers, method.label, scope, amount))
            if scope == plan.detail_scope:
                outcome.histograms += [histogram(pruned, name, method.label, model) for name in plan.histogram_layers]
        del pruned
    outcome.timing = _timing(plan, rounds, spreads)
    return outcome


def _measured(dense: nn.Module, pruned: nn.Module, metric: Metric, inputs: Any, plan: SweepPlan,
              rounds: list[int], spreads: list[float]) -> tuple[Any, ...]:
    """(value, params, nonzero, macs, nonzero MACs, latency ms, latency ratio) of one copy."""
    macs = mac_counts(pruned, inputs)
    latency_ms = ratio = None
    if plan.latency:
        timing = compare_latency({"dense": dense, "pruned": pruned}, inputs, threads=plan.threads,
                                 budget_s=plan.latency_budget_s)
        latency_ms, ratio = timing["pruned"].median_ms, timing.ratios["pruned"].median
        rounds.append(timing.rounds)
        spreads.append(timing.spread)
    return metric(pruned), count_params(pruned), count_nonzero(pruned), macs.dense, macs.nonzero, latency_ms, ratio


def _timing(plan: SweepPlan, rounds: list[int], spreads: list[float]) -> dict[str, Any]:
    if not plan.latency:
        return {"measured": False}
    return {"measured": True, "threads": plan.threads, "budget_s": plan.latency_budget_s, "rounds_min": min(rounds),
            "rounds_max": max(rounds), "spread": max(spreads), "noisy_copies": sum(s > 0.1 for s in spreads)}


def layer_sparsity(pruned: nn.Module, layers: list[tuple[str, int]], method: str, scope: str,
                   amount: float) -> LayerSparsity:
    """The fraction of each dense layer's elements that are zero or gone in ``pruned``."""
    params = dict(pruned.named_parameters())
    sparsity = [1.0 - int(torch.count_nonzero(params[name].detach())) / numel for name, numel in layers]
    return LayerSparsity(method, scope, amount, [name for name, _ in layers], sparsity)


def histogram(model: nn.Module, layer: str, label: str, dense: nn.Module | None = None) -> Histogram:
    """The weights of ``layer`` binned on the dense layer's range (``dense``; ``model`` itself when None)."""
    reference = _parameter(dense or model, layer)
    low, high = float(reference.min()), float(reference.max())
    bins = min(HISTOGRAM_BINS, max(8, reference.numel() // 10))  # about ten weights a bin in small layers
    edges = torch.linspace(low, high if high > low else low + 1.0, bins + 1, dtype=torch.float64)
    values = _parameter(model, layer).flatten().double()
    nonzero = values[values != 0]
    counts = torch.histogram(nonzero.clamp(float(edges[0]), float(edges[-1])), bins=edges).hist
    zeros = values.numel() - nonzero.numel()
    removed = reference.numel() - values.numel()
    return Histogram(layer, label, edges.tolist(), [int(c) for c in counts], zeros, removed)


def _parameter(model: nn.Module, name: str) -> torch.Tensor:
    return dict(model.named_parameters())[name].detach().cpu()  # torch.histogram runs on the CPU only


def resolve_layers(model: nn.Module, names: Sequence[str] | None,
                   default: Callable[[list[str]], list[str]]) -> list[str]:
    """Parameter names for ``names`` (a module name stands for its ``weight``); ``default`` picks from the
    pruned layers when ``names`` is None. An unknown name raises, listing a few that exist."""
    pruned = [name for name, _ in pruned_layers(model)]
    if names is None:
        return default(pruned)
    params = dict(model.named_parameters())
    resolved = []
    for name in names:
        found = name if name in params else f"{name}.weight" if f"{name}.weight" in params else None
        if found is None:
            raise PruningError(
                f"histogram_layers: {name!r} is not a layer of the model; layers look like {', '.join(pruned[:4])}")
        resolved.append(found)
    return list(dict.fromkeys(resolved))
