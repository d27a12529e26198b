"""Latency lookup table: how long each layer takes at each candidate width, measured here, cached on disk.

Built once per model architecture, input shape, thread count, torch version and machine (the cache key),
under :func:`secateurs.storage.cache_dir`. For each candidate width (100%, 90%, ..., 10% of every group's
channels or heads, rounded as ``round_to`` rounds them), a copy of the model is cut to that width; its
layers' inputs are captured with forward hooks in one pass, and each layer call is timed on inputs of
those shapes, in isolation, with :func:`secateurs.measure.compare_latency`: the same call at every width
interleaved round by round, so the ratios to the dense call survive load from other work. The timed
calls are the leaf modules, and modules that use their children's weights themselves
(``nn.MultiheadAttention``) as a whole; what happens between them (additions, attention products written
inline), and how layers run inside the model rather than alone, are calibrated: the whole model is timed at
every width too (interleaved), and its time is fitted as ``fixed + scale x (sum of its calls' times)``.

A call's *work* is the share of its weight left (convolutions, linear layers: their MACs exactly), the share
of all the weights under it (whole modules), or else the share of its output left (norms, activations,
pooling). A model whose groups keep other counts is predicted call by call: each call's time at its work,
interpolated in its measured ratios (made non-decreasing), summed, and calibrated. The result of an allocation is
then measured against the dense model, interleaved, by :func:`secateurs.analysis.allocate`.

Whole blocks (``granularity="layer"``) need no widths: :func:`block_latencies` times each block's call alone,
interleaved with the whole model, once per allocation.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from secateurs.analysis.costs import CostModel, Term
from secateurs.core.targets import is_linear_like
from secateurs.measure import compare_latency
from secateurs.runtime import watch_inputs
from secateurs.storage import atomic_file, cache_dir
from secateurs.structural import DependencyGraph, Group, build_graph
from secateurs.structural.api import apply_keep
from secateurs.structural.axes import Layout
from secateurs.structural.planning import plan_keep

#: Candidate widths: shares of every group's channels or heads kept.
DEFAULT_WIDTHS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
#: Seconds of timed calls per width of one layer call (each layer is fast; ten widths are timed together).
CALL_BUDGET_S = 0.03
#: Seconds of timed calls of the whole model per width, for the calibration.
MODEL_BUDGET_S = 0.5
FORMAT = "secateurs.latency-table"
FORMAT_VERSION = 2

#: Times models that take no arguments (layer calls bound to their inputs) on ``threads`` threads: median ms.
Timer = Callable[[Mapping[str, nn.Module], int, float], dict[str, float]]


@dataclass
class CallLatency:
    """One timed layer call (``module#k``: the k-th call of that module) at each candidate width."""

    key: str
    dense_ms: float
    #: Work left at each width (see the module docstring) and time over the dense call's.
    work: list[float]
    ratios: list[float]

    def ratio(self, work: float) -> float:
        """Time over dense at ``work``, interpolated in the measured points smoothed to rise with work."""
        works, ratios = self._curve
        return float(np.interp(work, works, ratios))

    @cached_property
    def _curve(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.work, kind="stable")
        return np.asarray(self.work, dtype=float)[order], _rising(np.asarray(self.ratios, dtype=float)[order])


def _rising(values: np.ndarray) -> np.ndarray:
    """A non-decreasing fit of noisy timings: a running median of three (one slow round on a loaded machine
    is not a trend), then pool-adjacent-violators (isotonic least squares)."""
    smooth = values.copy()
    for i in range(1, len(values) - 1):
        smooth[i] = np.median(values[i - 1:i + 2])
    blocks: list[list[float]] = []  # [mean, count]
    for value in smooth:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count), blocks[-1][1] + count]
    return np.repeat([b[0] for b in blocks], [int(b[1]) for b in blocks])


@dataclass
class LatencyTable:
    """Layer latencies at candidate widths (see the module docstring); ``model_ms``: the whole model at each width."""

    key: str
    granularity: str
    threads: int
    round_to: int | None
    widths: list[float]
    model_ms: list[float]
    calls: list[CallLatency]
    seconds: float = 0.0
    measurements: int = 0
    cached: bool = field(default=False, compare=False)

    def calls_ms(self, index: int) -> float:
        """The timed calls' summed times at width ``widths[index]``."""
        return sum(call.dense_ms * call.ratios[index] for call in self.calls)

    @property
    def calibration(self) -> tuple[float, float]:
        """``(fixed, scale)``: the whole model's time fitted as ``fixed + scale x calls' time`` over the widths
        (least squares; ``fixed`` kept at 0 or more, all in scale when the fit would make it negative)."""
        x = np.array([self.calls_ms(i) for i in range(len(self.widths))])
        y = np.asarray(self.model_ms, dtype=float)
        if len(x) > 1 and np.ptp(x) > 0:
            scale, fixed = np.polyfit(x, y, 1)
            if fixed >= 0 and scale > 0:
                return float(fixed), float(scale)
        return 0.0, float((x @ y) / (x @ x)) if x @ x > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return {"format": FORMAT, "version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        fields = {key: value for key, value in data.items() if key not in ("format", "version")}
        fields["calls"] = [CallLatency(**call) for call in fields["calls"]]
        return cls(**fields)

    def summary(self) -> str:
        source = "read from the cache" if self.cached else f"measured in {self.seconds:.0f} s ({self.measurements} timings)"
        fixed, scale = self.calibration
        return (f"latency table: {len(self.calls)} layer calls x {len(self.widths)} widths on {self.threads} "
                f"thread(s), dense model {self.model_ms[0]:.2f} ms (fitted as {fixed:.2f} ms + {scale:.2f} x the layers'); "
                f"{source}")


# ---- what a call's work is -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallWork:
    """How much work a call does, from the sizes of the tensors that measure it (see the module docstring)."""

    key: str
    module: str
    tensors: tuple[tuple[Layout, ...], ...]

    def classes(self) -> set[int]:
        return {c for layouts in self.tensors for layout in layouts for c in layout.classes()}

    def fraction(self, counts: Mapping[int, int]) -> float:
        """Work left when each class keeps ``counts[cls]`` (the others whole)."""
        keep = {cls: range(count) for cls, count in counts.items()}
        dense = sum(math.prod(layout.size for layout in layouts) for layouts in self.tensors)
        left = sum(math.prod(layout.new_size(keep) for layout in layouts) for layouts in self.tensors)  # type: ignore[arg-type]
        return left / dense if dense else 1.0


def _whole_modules(graph: DependencyGraph) -> set[str]:
    """Modules timed as one call: the nearest called ancestors of modules whose traced weights are used
    without the module itself being called (``nn.MultiheadAttention``'s ``out_proj``)."""
    called = {call.name for call in graph.calls}
    used = {h.module_name for name in graph.layouts for h in graph.holders.get(name, ()) if h.kind == "param"}
    whole = set()
    for name in used - called:
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]
        whole.add(next((a for a in ancestors if a in called), ""))
    return whole


def _timed(graph: DependencyGraph) -> list[str]:
    """Names of the modules whose calls are timed: whole modules, and leaves not inside one."""
    whole = _whole_modules(graph)
    inside = lambda name: any(name.startswith(w + ".") or (w == "" and name) for w in whole)
    leaves = {name for name, module in graph.named.items() if next(module.children(), None) is None}
    return sorted({name for name in (whole | leaves) if not inside(name)})


def call_works(graph: DependencyGraph) -> list[CallWork]:
    """The work of every timed call of the traced forward pass, keyed ``module#k``."""
    timed = set(_timed(graph))
    whole = _whole_modules(graph)
    seen: dict[str, int] = {}
    works = []
    for call in graph.calls:
        if call.name not in timed:
            continue
        index = seen[call.name] = seen.get(call.name, -1) + 1
        key = f"{call.name}#{index}"
        works.append(CallWork(key, call.name, _work_tensors(graph, call.name, call.output_labels, call.name in whole)))
    return works


def _work_tensors(graph: DependencyGraph, module_name: str, output_labels: tuple[int, ...] | None,
                  whole: bool) -> tuple[tuple[Layout, ...], ...]:
    if is_linear_like(graph.named[module_name]):
        weight = [n for n, holders in graph.holders.items() if n in graph.layouts
                  and any(h.module_name == module_name and h.attr == "weight" for h in holders)]
        return tuple(tuple(graph.layouts[name]) for name in weight)
    if whole:
        inside = lambda h: h.module_name == module_name or h.module_name.startswith(module_name + ".")
        owned = [n for n, holders in graph.holders.items() if n in graph.layouts and holders[0].kind == "param"
                 and any(inside(h) for h in holders)]
        return tuple(tuple(graph.layouts[name]) for name in owned)
    if output_labels:
        return (tuple(graph.store.layout(axis) for axis in output_labels),)
    return ()


# ---- measuring -----------------------------------------------------------------------------------


def shrunk_copy(model: nn.Module, example_inputs: Any, graph: DependencyGraph, groups: Sequence[Group],
                counts: Mapping[int, int], granularity: str = "channel") -> nn.Module:
    """A copy of ``model`` whose groups keep ``counts[cls]`` units (the first ones; what they are does not
    change sizes or speed), cut for real. The copy is made with its graph, so nothing is traced again."""
    twin, twin_graph = copy.deepcopy((model, graph))
    keep = {cls: np.arange(count) for cls, count in counts.items() if count < _size(groups, cls)}
    if keep:
        apply_keep(twin, example_inputs, twin_graph, list(groups), keep, granularity=granularity, method="first",
                   scope="local", amount=0.0, verify=False)
    return twin


def _size(groups: Sequence[Group], cls: int) -> int:
    return next(group.size for group in groups if group.cls == cls)


def width_counts(groups: Sequence[Group], width: float, round_to: int | None) -> dict[int, int]:
    """What each group keeps at a uniform ``width`` (``round_to`` rounding channel counts as shrink does)."""
    if width >= 1.0:
        return {group.cls: group.size for group in groups}
    scores = {group.cls: torch.zeros(group.size) for group in groups}
    keep = plan_keep(list(groups), scores, round(1.0 - width, 10), round_to=round_to)
    return {group.cls: len(keep[group.cls]) if group.cls in keep else group.size for group in groups}


class _Bound(nn.Module):
    """A module bound to its inputs: called with no arguments, as :func:`compare_latency` calls it."""

    def __init__(self, module: nn.Module, inputs: Any) -> None:
        super().__init__()
        self.module = module
        self.inputs = inputs

    def forward(self) -> Any:
        args, kwargs = self.inputs
        return self.module(*args, **kwargs)


@dataclass(frozen=True)
class _FloatInput:
    """A captured float input, kept as its shape: remade at random for timing (values do not change speed,
    denormals being flushed), so that ten widths of a model's activations need not be held."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


def _shape_only(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return _FloatInput(tuple(value.shape), value.dtype, value.device) if value.is_floating_point() else value.clone()
    return value


def _remade(value: Any) -> Any:
    return torch.randn(value.shape, dtype=value.dtype, device=value.device) if isinstance(value, _FloatInput) else value


def captured_inputs(model: nn.Module, example_inputs: Any, modules: Iterable[str]) -> dict[str, Any]:
    """The inputs of every call of ``modules`` in one forward pass, keyed ``module#k``, float tensors as shapes."""
    named = dict(model.named_modules())
    captured: dict[str, Any] = {}
    seen: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            index = seen[name] = seen.get(name, -1) + 1
            captured[f"{name}#{index}"] = (tree_map(_shape_only, args), tree_map(_shape_only, kwargs))
        return record

    watch_inputs(model, example_inputs, {named[name]: hook(name) for name in modules})
    return captured


def default_timer(models: Mapping[str, nn.Module], threads: int, budget_s: float) -> dict[str, float]:
    """Median ms of each model, from :func:`compare_latency`: the reference's median times each one's median
    per-round ratio to it, so that load in one round cancels out."""
    comparison = compare_latency(models, (), threads=threads, budget_s=budget_s, warmup=2)
    reference = comparison[comparison.reference].median_ms
    return {name: reference * ratio.median for name, ratio in comparison.ratios.items()}


# ---- the table -------------------------------------------------------------------------------------


def table_key(model: nn.Module, example_inputs: Any, granularity: str, groups: Sequence[Group],
              round_to: int | None, widths: Sequence[float], threads: int) -> str:
    """The cache key: architecture (module tree, tensor shapes), inputs, what is cut, threads, torch, machine."""
    shapes = [(name, list(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    inputs = tree_map(lambda v: [list(v.shape), str(v.dtype)] if isinstance(v, torch.Tensor) else repr(v),
                      example_inputs if isinstance(example_inputs, (tuple, list, dict)) else (example_inputs,))
    described = {
        "architecture": repr(model), "tensors": shapes, "inputs": inputs, "granularity": granularity,
        "groups": [(g.name, g.size) for g in groups], "round_to": round_to, "widths": list(widths),
        "threads": threads, "torch": torch.__version__, "machine": [platform.machine(), platform.processor(), os.cpu_count()],
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_path(key: str) -> Path:
    return cache_dir() / "latency" / f"{key}.json"


def _read_cached(key: str) -> LatencyTable | None:
    try:
        data = json.loads(_cache_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        return None
    table = LatencyTable.from_dict(data)
    table.cached = True
    return table


def _write_cached(table: LatencyTable) -> None:
    with atomic_file(_cache_path(table.key)) as temp:
        temp.write_text(json.dumps(table.to_dict()) + "\n", encoding="utf-8")


def latency_table(model: nn.Module, example_inputs: Any, *, granularity: str = "channel",
                  graph: DependencyGraph | None = None, groups: Sequence[Group] | None = None,
                  round_to: int | None = None, widths: Sequence[float] = DEFAULT_WIDTHS, threads: int = 1,
                  cache: bool = True, timer: Timer = default_timer, progress: bool = True) -> LatencyTable:
    """The latency table of ``model`` on ``example_inputs`` (see the module docstring): from the cache when
    this architecture, input, thread count, torch and machine were measured before, else measured now and
    cached. ``groups`` are those cut (default: every ``granularity`` group of the graph); ``timer`` replaces
    the timing (tests)."""
    graph = graph if graph is not None else build_graph(model, example_inputs)
    groups = list(groups) if groups is not None else graph.groups(granularity)  # type: ignore[arg-type]
    widths = sorted({float(w) for w in (1.0, *widths)}, reverse=True)
    key = table_key(model, example_inputs, granularity, groups, round_to, widths, threads)
    found = _read_cached(key) if cache else None
    if found is not None:
        return found
    started = time.perf_counter()
    table = _measure(model, example_inputs, graph, groups, granularity, round_to, widths, threads, timer, progress)
    table.key, table.seconds = key, time.perf_counter() - started
    if cache:
        _write_cached(table)
    return table


def _measure(model: nn.Module, example_inputs: Any, graph: DependencyGraph, groups: list[Group], granularity: str,
             round_to: int | None, widths: list[float], threads: int, timer: Timer, progress: bool) -> LatencyTable:
    counts = {width: width_counts(groups, width, round_to) for width in widths}
    works = [w for w in call_works(graph) if w.classes() & set(counts[widths[0]])]
    work_at = {w.key: [w.fraction(counts[width]) for width in widths] for w in works}
    varying = [w for w in works if any(f < 1.0 for f in work_at[w.key])]
    modules = sorted({w.module for w in varying})
    copies = {width: model if width == 1.0 else shrunk_copy(model, example_inputs, graph, groups, counts[width], granularity)
              for width in widths}
    inputs = {width: captured_inputs(twin, example_inputs, modules) for width, twin in copies.items()}
    named = {width: dict(twin.named_modules()) for width, twin in copies.items()}
    calls = []
    for work in tqdm(varying, desc="latency table", unit="layer", disable=not progress):
        bound = {str(w): _Bound(named[w][work.module], tree_map(_remade, inputs[w][work.key])) for w in widths}
        times = timer(bound, threads, CALL_BUDGET_S)
        dense = times[str(widths[0])]
        calls.append(CallLatency(work.key, dense, work_at[work.key], [times[str(w)] / dense for w in widths]))
    whole = timer({str(w): _Bound(copies[w], _as_call(example_inputs)) for w in widths}, threads, MODEL_BUDGET_S)
    return LatencyTable("", granularity, threads, round_to, widths, [whole[str(w)] for w in widths], calls,
                        measurements=(len(calls) + 1) * len(widths))


def _as_call(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def latency_cost_model(table: LatencyTable, graph: DependencyGraph, groups: Sequence[Group]) -> CostModel:
    """Predicted milliseconds of the model as a function of what each group keeps: every timed call at its
    work (interpolated in the table), summed with the calls no group touches, and calibrated."""
    unit_of = {group.cls: index for index, group in enumerate(groups)}
    works = {work.key: work for work in call_works(graph)}
    fixed, scale = table.calibration
    constant, terms = fixed, []
    for call in table.calls:
        work = works.get(call.key)
        classes = sorted(work.classes() & unit_of.keys()) if work is not None else []
        if not classes:
            constant += scale * call.dense_ms
            continue
        terms.append(Term(tuple(unit_of[c] for c in classes), _call_time(call, work, classes, scale)))  # type: ignore[arg-type]
    model_cost = CostModel("latency", 0.0, constant, terms)
    model_cost.dense = model_cost.cost([group.size for group in groups])
    return model_cost


def _call_time(call: CallLatency, work: CallWork, classes: list[int], scale: float) -> Callable[[tuple[int, ...]], float]:
    return lambda kept: scale * call.dense_ms * call.ratio(work.fraction(dict(zip(classes, kept))))


# ---- whole blocks ----------------------------------------------------------------------------------

#: The whole model's key among the timed calls of :func:`block_latencies` (no module has this name).
WHOLE_MODEL = "(whole model)"


def block_latencies(model: nn.Module, example_inputs: Any, blocks: Sequence[str], *, threads: int = 1,
                    timer: Timer = default_timer, budget_s: float = MODEL_BUDGET_S) -> tuple[float, list[float]]:
    """Milliseconds of the whole model and of each block's call alone, on the inputs it gets inside the model
    (float inputs remade at random: values do not change speed), all timed together, interleaved."""
    inputs = captured_inputs(model, example_inputs, blocks)
    named = dict(model.named_modules())
    calls = {WHOLE_MODEL: _Bound(model, _as_call(example_inputs))}
    calls.update({name: _Bound(named[name], tree_map(_remade, inputs[f"{name}#0"])) for name in blocks})
    times = timer(calls, threads, budget_s * 2)
    return times[WHOLE_MODEL], [times[name] for name in blocks]
