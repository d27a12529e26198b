"""Check a shrunk model against the masked original, and count its MACs on the traced path.

The reference is the original model with every removed slice zeroed (masked copies of the affected
parameters are swapped in for one forward pass and swapped out again). Removing a slice
that is zero in every weight that reads or writes it cannot change the output, so the two outputs must
agree to float rounding; anything more is a bug or an unsupported pattern, and the surgery is undone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.flop_counter import FlopCounterMode

from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.runtime import call_model, inference
from secateurs.structural.graph import DependencyGraph
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
        result: list[np.ndarray | None] = []
        for axis in labels:
            layout = self.graph.store.layout(axis)
            kept = layout.kept_positions(self.keep) if layout.classes() & self.keep.keys() else None
            result.append(kept if kept is not None and len(kept) < layout.size else None)
        return result

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


def run_outputs(model: nn.Module, example_inputs: Any) -> tuple[list[torch.Tensor], int]:
    """Output tensors of ``model`` in eval mode, and its MACs counted on the same path the trace took
    (``nn.MultiheadAttention``'s fused fast path hides its attention from the counter). Models holding such
    attention also run once on the fast path, which must give the same outputs."""
    counter = FlopCounterMode(display=False)
    with analysis_mode(model), counter:
        output = call_model(model, example_inputs)
    outputs = [t.detach() for t in output_tensors(output)]
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        with inference(model):
            fast = [t.detach() for t in output_tensors(call_model(model, example_inputs))]
        diff = max_abs_diff(outputs, fast)
        if not diff <= tolerance(outputs):
            raise UnsupportedOperationError(f"nn.MultiheadAttention's fast path gives other outputs (by {diff:.3g})")
    return outputs, int(counter.get_total_flops()) // 2


def masked_outputs(graph: DependencyGraph, example_inputs: Any, keep: dict[int, np.ndarray],
                   positions: dict[str, list[np.ndarray | None]], statistics_over_kept: bool) -> list[torch.Tensor]:
    """The reference: the original model with every removed slice zeroed (and, when normalised dimensions
    are pruned, statistics over the kept positions), run exactly as it was traced."""
    model = graph.model
    with swapped(graph, removed_slices_zeroed(graph, positions)), analysis_mode(model):
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


def max_abs_diff(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    if len(reference) != len(outputs):
        raise UnsupportedOperationError(f"the shrunk model returns {len(outputs)} tensors, the original {len(reference)}")
    worst = 0.0
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            raise UnsupportedOperationError(f"an output changed shape from {tuple(ref.shape)} to {tuple(out.shape)}")
        if ref.is_floating_point() or ref.is_complex():
            worst = max(worst, float((ref.double() - out.double()).abs().max()) if ref.numel() else 0.0)
        elif not torch.equal(ref, out):
            worst = max(worst, float((ref.double() - out.double()).abs().max()))
    return worst


def tolerance(reference: list[torch.Tensor], atol: float | None = None) -> float:
    """Float rounding scale: relative to the largest output value, looser for half precision."""
    if atol is not None:
        return atol
    scale = max([1.0] + [float(t.abs().max()) for t in reference if t.is_floating_point() and t.numel()])
    low = any(t.dtype in (torch.float16, torch.bfloat16) for t in reference)
    return (3e-2 if low else 1e-3) * scale


def run_shrunk(model: nn.Module, example_inputs: Any,
               explain: Callable[[str, Exception], Exception]) -> tuple[list[torch.Tensor], int]:
    """:func:`run_outputs` of the shrunk model; an exception in forward becomes ``explain(module path, exc)``."""
    with _failing_module(model) as path:
        try:
            return run_outputs(model, example_inputs)
        except Exception as exc:
            raise explain(path[-1] if path else "<model>", exc) from exc


def compare_outputs(reference: list[torch.Tensor] | None, outputs: list[torch.Tensor], atol: float | None,
                    comparison: str) -> tuple[float | None, float | None]:
    """(largest difference, tolerance) of ``outputs`` against ``reference`` (None, None without one); beyond the
    tolerance a :class:`PruningError` says ``comparison`` ("the shrunk model differs from the masked model")."""
    if reference is None:
        return None, None
    diff, tol = max_abs_diff(reference, outputs), tolerance(reference, atol)
    if not diff <= tol:
        raise PruningError(
            f"verification failed: {comparison} by {diff:.3g} (tolerance {tol:.3g}); the model was restored. "
            "Please report this model."
        )
    return diff, tol


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
