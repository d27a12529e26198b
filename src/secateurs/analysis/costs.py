"""What a model costs as a function of how much each unit keeps: the budget side of an allocation.

A :class:`CostModel` is a constant plus one :class:`Term` per tensor (or per timed call), each a function of
the kept counts of the few units it involves, so that moving one unit re-evaluates only its own terms.

* **Groups** (``shrink``: channels, heads). A tensor's size after cutting is the product over its
  dimensions of each dimension's size with every class keeping its count (the dependency graph's layouts:
  products such as ``heads x head_dim`` and concatenations such as a fused ``qkv`` are exact). Parameters
  cost 1 each; bytes cost the element size, buffers included. MACs: a convolution or linear layer makes
  ``weights x output positions`` multiply-accumulates and channel pruning leaves the positions alone, so its
  MACs are its dense MACs (``FlopCounterMode``, per module) times the share of its weight left: exact. MACs
  that no weight carries (attention's products of activations) are counted as fixed, an upper bound;
  :func:`secateurs.analysis.allocate` measures the result and closes the gap.
* **Masks** (one unit per parameter): a weight left nonzero costs 1 (params, sparsity), its layer's MACs per
  weight (``nonzero MACs``, as :func:`secateurs.measure.mac_counts` counts them), or its bytes in secateurs'
  sparse format (a bit of bitmask per weight, plus the nonzero values, or dense when that is smaller).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from secateurs.core.targets import Target, is_linear_like
from secateurs.errors import PruningError
from secateurs.measure import count_nonzero, mac_counts, size_on_disk
from secateurs.runtime import call_model, inference
from secateurs.structural import DependencyGraph, Group
from secateurs.structural.axes import Layout


@dataclass(frozen=True)
class Term:
    """Part of a cost that depends on the kept counts of ``units`` (indices), in that order."""

    units: tuple[int, ...]
    value: Callable[[tuple[int, ...]], float]


class CostModel:
    """``constant + sum of terms``, and ``dense``: the cost of the model as it was (ratios divide by it)."""

    def __init__(self, kind: str, dense: float, constant: float, terms: Sequence[Term]) -> None:
        self.kind, self.dense, self.constant, self.terms = kind, dense, constant, list(terms)
        self.by_unit: dict[int, list[Term]] = defaultdict(list)
        for term in self.terms:
            for unit in term.units:
                self.by_unit[unit].append(term)

    def cost(self, kept: Sequence[int]) -> float:
        return self.constant + sum(term.value(tuple(kept[u] for u in term.units)) for term in self.terms)

    def ratio(self, kept: Sequence[int]) -> float:
        return self.cost(kept) / self.dense if self.dense else 0.0

    def change(self, kept: Sequence[int], unit: int, count: int) -> float:
        """How the cost changes when ``unit`` keeps ``count`` instead of ``kept[unit]`` (negative = saves)."""
        moved = list(kept)
        moved[unit] = count
        return sum(
            term.value(tuple(moved[u] for u in term.units)) - term.value(tuple(kept[u] for u in term.units))
            for term in self.by_unit.get(unit, ())
        )

    def neighbours(self, unit: int) -> set[int]:
        """Units sharing a term with ``unit``: what moving it changes the savings of."""
        return {other for term in self.by_unit.get(unit, ()) for other in term.units}


def module_macs(model: nn.Module, inputs: Any) -> tuple[int, dict[str, int]]:
    """Total MACs of one forward pass on ``inputs``, and the MACs of each module (itself and what it calls)."""
    counter = FlopCounterMode(display=False)
    with inference(model), counter:
        call_model(model, inputs)
    prefix = type(model).__name__
    by_module = {}
    for name, counts in counter.get_flop_counts().items():
        if name == "Global":  # the counter's own total
            continue
        key = "" if name == prefix else name.removeprefix(prefix + ".")
        by_module[key] = int(sum(counts.values())) // 2
    return int(counter.get_total_flops()) // 2, by_module


# ---- groups (shrink) -----------------------------------------------------------------------------


def _sliced(layouts: list[Layout], classes: list[int], coefficient: float) -> Callable[[tuple[int, ...]], float]:
    """The cost of a tensor whose ``classes`` keep the given counts (in that order)."""

    def value(kept: tuple[int, ...]) -> float:
        keep = {cls: range(count) for cls, count in zip(classes, kept)}
        return coefficient * math.prod(layout.new_size(keep) for layout in layouts)  # type: ignore[arg-type]

    return value


def group_cost_model(kind: str, model: nn.Module, example_inputs: Any, graph: DependencyGraph,
                     groups: Sequence[Group]) -> CostModel:
    """The cost of ``model`` (``params``, ``macs`` or ``size``) as a function of the channels or heads each
    group keeps (see the module docstring)."""
    unit_of = {group.cls: index for index, group in enumerate(groups)}
    coefficients, constant = _tensor_coefficients(kind, model, example_inputs, graph)
    terms = []
    for name, coefficient in coefficients.items():
        layouts = graph.layouts.get(name)
        classes = sorted(set().union(*(layout.classes() for layout in layouts)) & unit_of.keys()) if layouts else []
        if not classes:
            constant += coefficient * graph.tensors[name].numel()
            continue
        terms.append(Term(tuple(unit_of[c] for c in classes), _sliced(layouts, classes, coefficient)))  # type: ignore[arg-type]
    model_cost = CostModel(kind, 0.0, constant, terms)
    model_cost.dense = model_cost.cost([group.size for group in groups])
    return model_cost


def _tensor_coefficients(kind: str, model: nn.Module, example_inputs: Any,
                         graph: DependencyGraph) -> tuple[dict[str, float], float]:
    """The cost of one element of each tensor, and what no tensor carries."""
    params = {name: 1.0 for name, holders in graph.holders.items() if holders[0].kind == "param"}
    if kind == "params":
        return params, 0.0
    if kind == "size":
        saved = {id(t) for t in model.state_dict(keep_vars=True).values()}
        sizes = {name: float(t.element_size()) for name, t in graph.tensors.items() if id(t) in saved}
        overhead = size_on_disk(model).dense_bytes - sum(graph.tensors[n].numel() * s for n, s in sizes.items())
        return sizes, overhead
    if kind == "macs":
        return _mac_coefficients(model, example_inputs, graph)
    raise PruningError(f"no cost model for target {kind!r} here")


def _mac_coefficients(model: nn.Module, example_inputs: Any, graph: DependencyGraph) -> tuple[dict[str, float], float]:
    """MACs per weight of every convolution and linear layer; the rest of the MACs is the constant."""
    total, by_module = module_macs(model, example_inputs)
    coefficients: dict[str, float] = {}
    carried = 0
    for name, holders in graph.holders.items():
        layers = [h.module_name for h in holders if h.attr == "weight" and is_linear_like(graph.named[h.module_name])]
        macs = sum(by_module.get(layer, 0) for layer in layers)
        if macs:
            coefficients[name] = macs / graph.tensors[name].numel()
            carried += macs
    return coefficients, float(total - carried)


# ---- masks -------------------------------------------------------------------------------------------


def _sparse_bytes(numel: int, element_size: int) -> Callable[[tuple[int, ...]], float]:
    """Bytes of a float tensor in the sparse format with ``kept`` nonzeros (dense when that is smaller)."""
    return lambda kept: float(min(numel * element_size, math.ceil(numel / 8) + kept[0] * element_size))


def mask_cost_model(kind: str, model: nn.Module, example_inputs: Any, targets: Sequence[Target]) -> CostModel:
    """The cost of ``model`` as a function of the nonzero weights each target keeps (``sparsity``, ``params``,
    ``macs`` or ``size``; see the module docstring)."""
    nonzero = [int(torch.count_nonzero(t.param.detach())) for t in targets]
    if kind == "sparsity":
        terms = [Term((i,), lambda kept: float(kept[0])) for i in range(len(targets))]
        return CostModel(kind, float(sum(t.param.numel() for t in targets)), 0.0, terms)
    if kind == "params":
        terms = [Term((i,), lambda kept: float(kept[0])) for i in range(len(targets))]
        return CostModel(kind, float(sum(p.numel() for p in model.parameters())), count_nonzero(model) - sum(nonzero), terms)
    if kind == "macs":
        return _mask_mac_model(model, example_inputs, targets, nonzero)
    if kind == "size":
        sizes = size_on_disk(model)
        terms = [Term((i,), _sparse_bytes(t.param.numel(), t.param.element_size())) for i, t in enumerate(targets)]
        now = sum(term.value((count,)) for term, count in zip(terms, nonzero))
        return CostModel(kind, float(sizes.dense_bytes), sizes.sparse_bytes - now, terms)
    raise PruningError(
        f"target {kind!r} cannot be reached with masks: zeroed weights leave dense kernels as slow as before; "
        "remove units for real (shrink: granularity channel or head) or budget sparsity, params, macs or size"
    )


def _mask_mac_model(model: nn.Module, example_inputs: Any, targets: Sequence[Target], nonzero: list[int]) -> CostModel:
    _, by_module = module_macs(model, example_inputs)
    per_weight = [by_module.get(t.module_name, 0) / t.param.numel() for t in targets]
    terms = [Term((i,), lambda kept, w=w: w * kept[0]) for i, w in enumerate(per_weight)]
    counts = mac_counts(model, example_inputs)
    now = sum(w * n for w, n in zip(per_weight, nonzero))
    return CostModel("macs", float(counts.dense), counts.nonzero - now, terms)

