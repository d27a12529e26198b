"""Check a shrunk model against the masked original, and count its MACs on the traced path.

The reference is the original model with every removed slice zeroed (masked copies of the affected
parameters are swapped in for one forward pass and swapped out again). Removing a slice
that is zero in every weight that reads or writes it cannot change what the kept units compute, so the
two models must agree to float rounding; anything more is a bug or an unsupported pattern, and the
surgery is undone.

The outputs alone prove little: a random-initialised model's outputs can vanish (torchvision
zero-initialises classifier heads), and any difference then passes. So the two runs are also compared
at the output of every layer that holds a cut tensor (the layers writing and reading each cut group),
at the positions the shrunk model keeps, each with a tolerance relative to its own values. A point whose
values vanish proves nothing and is not counted; when no point carries a signal the result says
"not verified" rather than "verified".
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten
from torch.utils.flop_counter import FlopCounterMode

from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.runtime import call_model, inference
from secateurs.structural.graph import DependencyGraph
from secateurs.structural.report import Verification
from secateurs.structural.surgery import slice_tensor
from secateurs.structural.trace import analysis_mode, output_tensors


@contextlib.contextmanager
def swapped(graph: DependencyGraph, replace: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily hold ``replace[name]`` in place of each named parameter (every holder of tied ones)."""
    named = dict(graph.model.named_modules(remove_duplicate=False))
    saved = []
    for name, tensor in replace.items():
        for holder in graph.holders[name]:
            table = named[holder.module_name]._parameters
            saved.append((table, holder.attr, table[holder.attr]))
            table[holder.attr] = nn.Parameter(tensor, requires_grad=False)
    try:
        yield
    finally:
        for table, attr, old in reversed(saved):
            table[attr] = old


class StatisticsOverKept(TorchDispatchMode):
    """Replays the traced forward pass, taking every recorded statistic over the kept positions only.

    Used for the masked reference when normalised dimensions are pruned: a layer norm over 384 channels
    of which 192 are zero is not the layer norm over the 192 kept ones, but the shrunk model computes the
    latter. Operations are matched to the trace by position and name.
    """

    def __init__(self, graph: DependencyGraph, keep: dict[int, np.ndarray]) -> None:
        super().__init__()
        self.graph, self.keep, self.count = graph, keep, 0

    def _positions(self, labels: tuple[int, ...]) -> list[np.ndarray | None]:
        return kept_along(self.graph, self.keep, labels)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        record = self.graph.stat_ops.get(self.count)
        self.count += 1
        if record is None:
            return func(*args, **kwargs)
        if str(func) != record.name:
            raise UnsupportedOperationError(
                f"cannot verify: the forward pass ran {func} where the trace had {record.name} "
                "(data-dependent control flow); use verify=False"
            )
        leaves, spec = tree_flatten((args, kwargs))
        sliced, changed = [], False
        for leaf, labels in zip(leaves, record.inputs):
            if isinstance(leaf, torch.Tensor) and labels is not None:
                positions = self._positions(labels)
                if any(p is not None for p in positions):
                    leaf, changed = _slice_keeping_layout(leaf, positions), True
            sliced.append(leaf)
        if not changed:
            return func(*args, **kwargs)
        new_args, new_kwargs = tree_unflatten(sliced, spec)
        new_args = _resized(func, new_args)
        out = func(*new_args, **new_kwargs)
        out_leaves, out_spec = tree_flatten(out)
        tensors = iter(record.outputs)
        restored = []
        for leaf in out_leaves:
            if isinstance(leaf, torch.Tensor):
                labels = next(tensors)
                leaf = _scatter(leaf, self._positions(labels), [self.graph.store.size(a) for a in labels])
            restored.append(leaf)
        return tree_unflatten(restored, out_spec)


def kept_along(graph: DependencyGraph, keep: dict[int, np.ndarray], labels: tuple[int, ...]) -> list[np.ndarray | None]:
    """Per dimension of a traced tensor with axes ``labels``: the positions kept, or None where all are."""
    result: list[np.ndarray | None] = []
    for axis in labels:
        layout = graph.store.layout(axis)
        kept = layout.kept_positions(keep) if layout.classes() & keep.keys() else None
        result.append(kept if kept is not None and len(kept) < layout.size else None)
    return result


def _resized(func: Any, args: tuple) -> tuple:
    """Size arguments that must follow sliced inputs (layer/group norm shapes)."""
    name = func._overloadpacket.__name__
    args = list(args)
    if name in ("native_layer_norm", "_fused_rms_norm", "layer_norm", "rms_norm"):
        args[1] = list(args[0].shape[args[0].dim() - len(args[1]):])
    elif name == "native_group_norm":
        args[4] = args[0].shape[1]
    return tuple(args)


def _dim_order(t: torch.Tensor) -> list[int]:
    return sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))


def _slice_keeping_layout(t: torch.Tensor, positions: list[np.ndarray | None]) -> torch.Tensor:
    """Kept slices of ``t`` in the same dimension order in memory (kernels choose their output layout from it)."""
    order = _dim_order(t)
    sliced = slice_tensor(t.permute(order), [positions[d] for d in order])
    return sliced.permute([order.index(d) for d in range(t.dim())])


def _scatter(t: torch.Tensor, positions: list[np.ndarray | None], sizes: list[int]) -> torch.Tensor:
    """Put a sliced result back at its positions in a zero tensor of the full size, with the same memory
    layout (dimension order) as the result, so later views behave (and dispatch) as in the trace."""
    order = _dim_order(t)
    for dim, pos in enumerate(positions):
        if pos is not None:
            shape = list(t.shape)
            shape[dim] = sizes[dim]
            full = t.new_zeros([shape[d] for d in order]).permute([order.index(d) for d in range(t.dim())])
            full.index_copy_(dim, torch.as_tensor(pos, dtype=torch.long, device=t.device), t)
            t = full
    return t


def run_outputs(model: nn.Module, example_inputs: Any,
                watch: contextlib.AbstractContextManager | None = None) -> tuple[list[torch.Tensor], int]:
    """Output tensors of ``model`` in eval mode, and its MACs counted on the same path the trace took
    (``nn.MultiheadAttention``'s fused fast path hides its attention from the counter); ``watch`` (a probe's
    hooks) is active for that pass only. Models holding such attention also run once on the fast path,
    which must give the same outputs."""
    counter = FlopCounterMode(display=False)
    with analysis_mode(model), counter, watch or contextlib.nullcontext():
        output = call_model(model, example_inputs)
    outputs = [t.detach() for t in output_tensors(output)]
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        with inference(model):
            fast = [t.detach() for t in output_tensors(call_model(model, example_inputs))]
        for point in (compare_point(f"output {i}", ref, out) for i, (ref, out) in enumerate(zip(outputs, fast))):
            if not point.ok:
                raise UnsupportedOperationError(f"nn.MultiheadAttention's fast path gives other outputs (by {point.abs_diff:.3g})")
    return outputs, int(counter.get_total_flops()) // 2


def masked_outputs(graph: DependencyGraph, example_inputs: Any, keep: dict[int, np.ndarray],
                   positions: dict[str, list[np.ndarray | None]], statistics_over_kept: bool,
                   watch: contextlib.AbstractContextManager | None = None) -> list[torch.Tensor]:
    """The reference: the original model with every removed slice zeroed (and, when normalised dimensions
    are pruned, statistics over the kept positions), run exactly as it was traced, under ``watch``."""
    model = graph.model
    with swapped(graph, removed_slices_zeroed(graph, positions)), analysis_mode(model), watch or contextlib.nullcontext():
        if statistics_over_kept:
            with StatisticsOverKept(graph, keep):
                output = call_model(model, example_inputs)
        else:
            output = call_model(model, example_inputs)
    return [t.detach() for t in output_tensors(output)]


def removed_slices_zeroed(graph: DependencyGraph, positions: dict[str, list[np.ndarray | None]]) -> dict[str, torch.Tensor]:
    """Copies of the affected parameters with the removed slices zeroed (buffers stay as they are)."""
    masked = {}
    for name, pos in positions.items():
        if graph.holders[name][0].kind != "param":
            continue
        tensor = graph.tensors[name].detach().clone()
        for dim, kept in enumerate(pos):
            if kept is not None:
                removed = np.setdiff1d(np.arange(tensor.shape[dim]), kept)
                tensor.index_fill_(dim, torch.as_tensor(removed, dtype=torch.long, device=tensor.device), 0)
        masked[name] = tensor
    return masked


def run_shrunk(model: nn.Module, example_inputs: Any, explain: Callable[[str, Exception], Exception],
               probe: ActivationProbe | None = None) -> tuple[list[torch.Tensor], int]:
    """:func:`run_outputs` of the shrunk model, compared at the probe's points as it runs; an exception in
    forward becomes ``explain(module path, exc)``."""
    with _failing_module(model) as path:
        try:
            return run_outputs(model, example_inputs, probe.checking() if probe else None)
        except Exception as exc:
            raise explain(path[-1] if path else "<model>", exc) from exc


@contextlib.contextmanager
def _failing_module(model: nn.Module) -> Iterator[list[str]]:
    """Yields a list that, after an exception in forward, holds the path of modules it happened in."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[str] = []
    handles = []

    def pre(module: nn.Module, args: Any) -> None:
        stack.append(names.get(id(module), type(module).__name__))

    def post(module: nn.Module, args: Any, output: Any) -> None:
        if stack:
            stack.pop()

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


# -- comparing at points where the values carry a signal ---------------------------------------------
def relative_tolerance(dtype: torch.dtype) -> float:
    """Float rounding (other kernels, other summation orders) relative to the values compared; looser for half precision."""
    return 3e-2 if dtype in (torch.float16, torch.bfloat16, torch.complex32) else 1e-3


def vanishing_below(dtype: torch.dtype) -> float:
    """The magnitude under which a tensor proves nothing: its relative tolerance would be within a few of the
    smallest normal numbers, where underflow and flushed denormals decide the values (about 5e-35 in float32)."""
    return 4 * torch.finfo(dtype).tiny / relative_tolerance(dtype)


@dataclass(frozen=True)
class PointResult:
    """One compared tensor: its largest difference, its scale (largest magnitude in the reference) and tolerance."""

    where: str
    abs_diff: float
    scale: float
    tolerance: float
    rtol: float
    floor: float
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.abs_diff <= self.tolerance

    @property
    def vanishing(self) -> bool:
        return self.scale < self.floor

    @property
    def rel_diff(self) -> float:
        return self.abs_diff / self.scale if self.scale else (math.inf if self.abs_diff else 0.0)


def compare_point(where: str, reference: torch.Tensor, output: torch.Tensor, atol: float | None = None) -> PointResult:
    """``output`` against ``reference``: equal within ``rtol × max|reference|`` (never under the vanishing floor,
    so values lost to underflow do not fail), or within ``atol`` when given. Equal infinities agree."""
    if reference.shape != output.shape:
        return PointResult(where, math.inf, 0.0, 0.0, 0.0, 0.0,
                           f"has shape {tuple(output.shape)} where the masked model's has {tuple(reference.shape)}")
    if not (reference.is_floating_point() or reference.is_complex()):  # exact, and no signal to count
        return PointResult(where, 0.0 if torch.equal(reference, output) else math.inf, 0.0, 0.0, 0.0, math.inf)
    wide = torch.promote_types(reference.dtype, torch.float64)
    ref, out = reference.detach().to(wide), output.detach().to(wide)
    diff = torch.where(ref == out, 0.0, (ref - out).abs()) if ref.numel() else ref.abs()
    magnitude = ref.abs()[ref.isfinite()]
    scale = float(magnitude.max()) if magnitude.numel() else 0.0
    rtol, floor = relative_tolerance(reference.dtype), vanishing_below(reference.dtype)
    tolerance = atol if atol is not None else max(rtol * scale, floor)
    return PointResult(where, float(diff.max()) if diff.numel() else 0.0, scale, tolerance, rtol, floor)


Positions = list[np.ndarray | None]


class ActivationProbe:
    """Forward hooks at the compared modules. :meth:`recording` keeps the masked model's outputs of each call,
    at the positions the shrunk model keeps (``kept[name][call]``; None: all); :meth:`checking` compares the
    shrunk model's as it runs. The hooks run outside any dispatch mode, so they neither shift the replay
    of :class:`StatisticsOverKept` nor count as MACs."""

    def __init__(self, points: Mapping[str, nn.Module], kept: Mapping[str, list[Positions | None]] | None = None,
                 atol: float | None = None) -> None:
        self.points, self.kept, self.atol = dict(points), dict(kept or {}), atol
        self.reference: dict[tuple[str, int], torch.Tensor] = {}
        self.results: list[PointResult] = []

    def recording(self) -> contextlib.AbstractContextManager:
        def keep(name: str, call: int, tensor: torch.Tensor) -> None:
            calls = self.kept.get(name, [])
            self.reference[name, call] = _kept_slice(tensor, calls[call] if call < len(calls) else None)

        return self._hooks(keep)

    def checking(self) -> contextlib.AbstractContextManager:
        def compare(name: str, call: int, tensor: torch.Tensor) -> None:
            reference = self.reference.pop((name, call), None)
            if reference is not None:
                where = f"the output of module {name!r}" + (f" (call {call + 1})" if call else "")
                self.results.append(compare_point(where, reference, tensor, self.atol))

        return self._hooks(compare)

    @contextlib.contextmanager
    def _hooks(self, on_output: Callable[[str, int, torch.Tensor], None]) -> Iterator[None]:
        calls: Counter[str] = Counter()

        def hook(module: nn.Module, args: Any, output: Any, name: str) -> None:
            call, calls[name] = calls[name], calls[name] + 1
            tensor = next((t for t in tree_leaves(output) if isinstance(t, torch.Tensor)), None)
            if tensor is not None:
                with _disable_current_modes(), torch.no_grad():
                    on_output(name, call, tensor.detach())

        handles = [m.register_forward_hook(functools.partial(hook, name=n)) for n, m in self.points.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def conclude(self, reference: list[torch.Tensor], outputs: list[torch.Tensor], comparison: str) -> Verification:
        """The verdict over every point and the model outputs; a difference beyond tolerance anywhere raises a
        :class:`PruningError` naming the first point it shows at (``comparison`` says what differs)."""
        if len(reference) != len(outputs):
            raise UnsupportedOperationError(f"the shrunk model returns {len(outputs)} tensors, the original {len(reference)}")
        final = [compare_point(f"model output {i}", r, o, self.atol) for i, (r, o) in enumerate(zip(reference, outputs))]
        failed = next((r for r in self.results + final if not r.ok), None)
        if failed is not None:
            raise PruningError(f"verification failed: {comparison} at {failed.where}: {_what_differs(failed)}; "
                               "the model was restored. Please report this model.")
        return _verdict(self.results, final, self.atol)


def cut_points(graph: DependencyGraph, keep: dict[int, np.ndarray], sliced: Iterable[str],
               atol: float | None = None) -> ActivationProbe:
    """A probe at every module holding a sliced parameter or buffer (those writing a cut group and those
    reading it), comparing the positions of its output that the shrunk model keeps (from the traced axes)."""
    canonical: dict[int, str] = {}
    for name, module in graph.named.items():
        canonical.setdefault(id(module), name)
    names = {canonical[id(graph.named[h.module_name])] for tensor in sliced for h in graph.holders[tensor]} - {""}
    kept: dict[str, list[Positions | None]] = defaultdict(list)
    for call in graph.calls:
        if call.name in names:
            kept[call.name].append(None if call.output_labels is None else kept_along(graph, keep, call.output_labels))
    return ActivationProbe({name: graph.named[name] for name in names}, kept, atol)


def _kept_slice(tensor: torch.Tensor, positions: Positions | None) -> torch.Tensor:
    """A copy of the positions of ``tensor`` that survive (later in-place operations must not change it)."""
    fits = positions is not None and len(positions) == tensor.dim() and all(
        p is None or (len(p) and int(p.max()) < size) for p, size in zip(positions, tensor.shape))
    return slice_tensor(tensor, positions) if fits else tensor.clone()  # type: ignore[arg-type]


def _what_differs(point: PointResult) -> str:
    if point.problem:
        return point.problem
    return (f"by {point.abs_diff:.3g}, {point.rel_diff:.3g} of its largest value {point.scale:.3g} "
            f"(tolerance {point.tolerance:.3g})")


def _verdict(inner: list[PointResult], final: list[PointResult], atol: float | None) -> Verification:
    """Verified when at least one compared tensor carries a signal; otherwise "not verified", and why."""
    points = inner + final
    max_abs = max((p.abs_diff for p in points), default=None)
    counted = [p for p in points if not p.vanishing]
    if not counted:
        floats = [p for p in points if math.isfinite(p.floor)]
        why = "no floating-point activation or output to compare" if not floats else (
            f"every compared value is below {max(p.floor for p in floats):.1g} in magnitude (largest "
            f"{max(p.scale for p in floats):.2g}): random-init outputs that vanish prove nothing")
        return Verification(False, f"not verified: {why}", 0, max_abs, None, atol)
    worst = max(p.rel_diff for p in counted)
    tolerance = atol if atol is not None else max(p.rtol for p in counted)
    sentence = (f"verified at {len(counted)} points (worst relative difference {worst:.2g}, "
                + (f"absolute tolerance {atol:g})" if atol is not None else f"tolerance {tolerance:g})"))
    if any(math.isfinite(p.floor) for p in final) and all(p.vanishing for p in final):
        sentence += "; the model's outputs vanish, so only its intermediate activations count"
    return Verification(True, sentence, len(counted), max_abs, worst, tolerance)
