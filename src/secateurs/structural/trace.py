"""Run the model once on an example input and record how channels flow, at the ATen level.

A :class:`Tracer` is a ``TorchDispatchMode``: every ATen operation the forward pass executes goes
through it after autograd has decomposed composite functions, so the rules in :mod:`.ops` see a small,
canonical set of operations whatever Python code produced them. Parameters and buffers are recognised
by identity and get prunable axes; any other tensor entering the computation (model inputs, tensors
kept outside the module state) gets frozen axes. Forward hooks keep a stack of module names so every
operation, fact and error names the module it happened in.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakTensorKeyDictionary

from secateurs.errors import UnsupportedOperationError
from secateurs.runtime import call_model
from secateurs.structural.axes import PROD, AxisStore
from secateurs.structural.ops import RULES

_MISSING = object()


class OpCall:
    """One executed ATen operation: arguments by schema name, and the tensors it returned."""

    def __init__(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.func = func
        self.name = str(func)
        self.packet = func._overloadpacket.__name__
        self.args: dict[str, Any] = {}
        schema_args = func._schema.arguments
        positional = [a for a in schema_args if not a.kwarg_only]
        for spec, value in zip(positional, args):
            self.args[spec.name] = value
        self.args.update(kwargs)
        for spec in schema_args:
            if spec.name not in self.args and spec.has_default_value():
                self.args[spec.name] = spec.default_value
        self.outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        if name in self.args:
            return self.args[name]
        if default is _MISSING:
            raise KeyError(f"{self.name} has no argument {name!r}")
        return default

    def tensor_args(self) -> list[torch.Tensor]:
        return [t for t in tree_leaves(list(self.args.values())) if isinstance(t, torch.Tensor)]

    def describe(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensor_args())
        return f"{self.name}({shapes})"


@dataclass(frozen=True)
class Holder:
    """Where a parameter or buffer lives: ``module_name.attr``."""

    module_name: str
    kind: str  # "param" or "buffer"
    attr: str

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.attr}" if self.module_name else self.attr


#: Freeze reasons of statistics start with this marker (see :mod:`.ops`).
STAT = "[statistic] "


@dataclass(frozen=True)
class StatOp:
    """An operation that took a statistic over some axis: its argument and output axes, by position in
    ``tree_leaves((args, kwargs))`` (None for non-tensors), so a later run can recompute it on kept slices."""

    index: int
    name: str
    inputs: tuple[tuple[int, ...] | None, ...]
    outputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ModuleCall:
    """One call of a module in the eval pass: the ops it ran, its first input and output tensors."""

    name: str
    start: int
    end: int
    input: int | None
    output: int | None
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    output_labels: tuple[int, ...] | None = None  # axes of the output tensor (what verification compares)


#: Module types whose code ties sizes the ATen trace cannot see (a size read from another tensor).
ModuleRule = Callable[["Tracer", nn.Module, tuple, dict, Any], None]
MODULE_RULES: dict[type[nn.Module], ModuleRule] = {}


def module_rule(cls: type[nn.Module]) -> Callable[[ModuleRule], ModuleRule]:
    def register(fn: ModuleRule) -> ModuleRule:
        MODULE_RULES[cls] = fn
        return fn

    return register


@module_rule(nn.MultiheadAttention)
def _trace_multihead_attention(tr: Tracer, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    """``in_proj`` output is unflattened as ``(3, query.size(-1))``: its per-projection width is the query width."""
    query = args[0] if args else kwargs.get("query")
    weight = module.in_proj_weight
    if not isinstance(query, torch.Tensor) or weight is None or weight not in tr._info:
        return
    width = tr.labels(query)[-1]
    tr.store.unify(tr.labels(weight)[0], tr.store.make(PROD, [tr.fresh(3, "query/key/value"), width]))


def _tie_to_input_width(parts: int, weight_attr: str, scale_from_width: bool = False) -> ModuleRule:
    """For attention modules that reshape with the input's width (``C // num_heads``, ``reshape(B, N, C)``):
    each of the ``parts`` projections is exactly as wide as the input. With ``scale_from_width`` the
    module also scales by ``(C // num_heads) ** -0.5``, so the head dim (innermost factor) keeps its size."""

    def tie(tr: Tracer, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        weight = getattr(module, weight_attr, None)
        if isinstance(weight, nn.Linear):
            weight = weight.weight
        if not isinstance(x, torch.Tensor) or weight is None or weight not in tr._info:
            return
        width = tr.labels(x)[-1]
        tr.store.unify(tr.labels(weight)[0], tr.store.make(PROD, [tr.fresh(parts, "query/key/value"), width]))
        layout = tr.store.layout(width)
        if scale_from_width and layout.kind == "prod":
            tr.freeze(_last_atom(layout), "attention scale computed from the input width")

    return tie


def _last_atom(layout: Any) -> int:
    while layout.kind != "atom":
        layout = layout.parts[-1]
    return layout.cls


MODULE_RULES_BY_NAME: dict[str, ModuleRule] = {
    "torchvision.models.swin_transformer.ShiftedWindowAttention": _tie_to_input_width(3, "qkv", scale_from_width=True),
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": _tie_to_input_width(3, "qkv"),
    "torchvision.models.maxvit.RelativePositionalMultiHeadAttention": _tie_to_input_width(3, "to_qkv"),
}


def _module_rule(module: nn.Module) -> ModuleRule | None:
    cls = type(module)
    return MODULE_RULES.get(cls) or MODULE_RULES_BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")


class Tracer(TorchDispatchMode):
    """Records axes for every tensor of one forward pass (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.store = AxisStore()
        self._info: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.tensors: dict[str, torch.Tensor] = {}
        self.holders: dict[str, list[Holder]] = defaultdict(list)
        self._owned: dict[int, str] = {}
        self.labels_of: dict[str, list[int]] = {}
        self.facts: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.stat_ops: dict[int, StatOp] = {}
        self.ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        self.calls: list[ModuleCall] = []
        self._ids: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self._open: list[tuple[int, int | None, tuple[int, ...] | None]] = []
        self._id_counter = 0
        self.recording = True
        self._took_stat = False
        self.unsupported: list[tuple[str, str, list[int]]] = []
        self.module_names: dict[int, str] = {}
        self._stack: list[str] = [""]
        self.op_count = 0
        self.notes: list[str] = []
        self.macs = 0
        for module_name, module in model.named_modules(remove_duplicate=False):
            self.module_names.setdefault(id(module), module_name)
            for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
                for attr, tensor in table.items():
                    if tensor is None:
                        continue
                    canonical = self._owned.setdefault(id(tensor), Holder(module_name, kind, attr).name)
                    self.tensors.setdefault(canonical, tensor)
                    self.holders[canonical].append(Holder(module_name, kind, attr))

    def untraced_params(self) -> list[str]:
        return [n for n, hs in self.holders.items() if hs[0].kind == "param" and n not in self.labels_of]

    # -- what rules call ------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return self._stack[-1] or "<model>"

    def labels(self, t: torch.Tensor) -> list[int]:
        labels = self._info.get(t)
        if labels is not None:
            return labels
        name = self._owned.get(id(t))
        if name is not None and self.tensors.get(name) is t:
            labels = [self.store.new(s) for s in t.shape]
            self.labels_of[name] = labels
        else:
            labels = [self.store.new(s, "model input or a tensor outside the module state") for s in t.shape]
        self._info[t] = labels
        return labels

    def assign(self, t: torch.Tensor, labels: list[int]) -> None:
        labels = list(labels)
        if len(labels) != t.dim() or any(self.store.size(a) != s for a, s in zip(labels, t.shape)):
            raise RuntimeError(f"internal: labels of sizes {[self.store.size(a) for a in labels]} for shape {tuple(t.shape)}")
        old = self._info.get(t)
        if old is not None and old is not labels:
            for a, b in zip(old, labels):
                self.store.unify(a, b)
            return
        self._info[t] = labels

    def fresh(self, size: int, reason: str | None = None) -> int:
        return self.store.new(size, None if reason is None else f"{reason} ({self.where})")

    def freeze(self, axis: int, reason: str) -> None:
        self.store.freeze(axis, f"{reason} ({self.where})")

    def stat(self, axis: int, what: str) -> None:
        """A statistic over ``axis`` (sum, mean, norm, softmax): it keeps its size unless statistics may be
        recomputed over kept positions (``prune_normalized``)."""
        self._took_stat = True
        self.freeze(axis, STAT + what)

    def fact(self, kind: str, **data: Any) -> None:
        self.facts[self._stack[-1]].append((kind, data))

    def unknown(self, call: OpCall) -> None:
        """An operation with no rule: everything it touches keeps its size; strict tracing reports it."""
        axes = [a for t in call.tensor_args() for a in self.labels(t)]
        self.unsupported.append((call.describe(), self.where, axes))
        for axis in axes:
            self.store.freeze(axis, f"unsupported operation {call.name} ({self.where})")
        for out in call.outputs:
            if out not in self._info:
                self._info[out] = [self.fresh(s, f"output of unsupported {call.name}") for s in out.shape]

    # -- dispatch -------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        call = OpCall(func, args, kwargs, out)
        handler = RULES.get(call.packet)
        self._took_stat = False
        try:
            if handler is None:
                self.unknown(call)
            else:
                handler(self, call)
        except UnsupportedOperationError:
            raise
        except Exception as exc:  # a rule met a case it cannot express: say where, never guess
            raise UnsupportedOperationError(
                f"secateurs could not analyse {call.describe()} in module {self.where!r}: {exc}"
            ) from exc
        for t in call.outputs:
            if t not in self._info:
                self._info[t] = [self.fresh(s, f"output of {call.name}") for s in t.shape]
        if self._took_stat and self.recording:
            leaves = tree_leaves((args, kwargs))
            self.stat_ops[self.op_count] = StatOp(
                self.op_count, call.name,
                tuple(tuple(self.labels(x)) if isinstance(x, torch.Tensor) else None for x in leaves),
                tuple(tuple(self._info[t]) for t in call.outputs),
            )
        if self.recording:
            self.ops.append((call.name, tuple(self.tensor_id(t) for t in call.tensor_args()),
                             tuple(self.tensor_id(t) for t in call.outputs)))
        self.op_count += 1
        return out

    def tensor_id(self, t: torch.Tensor) -> int:
        """A serial number per tensor object, for the dataflow that depth pruning reads."""
        found = self._ids.get(t)
        if found is None:
            self._id_counter += 1
            found = self._ids[t] = self._id_counter
        return found

    # -- module stack ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []

        def first(value: Any) -> torch.Tensor | None:
            return next((t for t in tree_leaves(value) if isinstance(t, torch.Tensor)), None)

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            name = self.module_names.get(id(module), type(module).__name__)
            self._stack.append(name)
            x = first((args, kwargs))
            self._open.append((self.op_count, None if x is None else self.tensor_id(x), None if x is None else tuple(x.shape)))

        def post(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            name = self._stack[-1]
            if len(self._stack) > 1:
                self._stack.pop()
            start, x, shape = self._open.pop() if self._open else (self.op_count, None, None)
            y = first(output)
            if self.recording:
                self.calls.append(ModuleCall(name, start, self.op_count, x, None if y is None else self.tensor_id(y),
                                             shape, None if y is None else tuple(y.shape),
                                             tuple(self._info[y]) if y is not None and y in self._info else None))
            fn = _module_rule(module)
            if fn is not None:
                fn(self, module, args, kwargs, output)

        for module in self.model.modules():
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (tensors, tuples, lists, dicts, Hugging Face ``ModelOutput``)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in output_tensors(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in output_tensors(v)]
    return []


_STOCHASTIC = ("Dropout", "DropPath", "StochasticDepth", "DropBlock")


@contextlib.contextmanager
def analysis_mode(model: nn.Module, train: bool = False) -> Iterator[None]:
    """No autograd, the decomposed (analysable) path of ``nn.MultiheadAttention``, and eval mode; or, with
    ``train=True``, training control flow (auxiliary heads) with norms and dropouts still in eval mode so
    nothing random runs and no running statistics change."""
    was_training = {m: m.training for m in model.modules()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.train(train)
    if train:
        for module in model.modules():
            name = type(module).__name__
            if isinstance(module, nn.modules.batchnorm._NormBase) or any(s in name for s in _STOCHASTIC):
                module.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for module, mode in was_training.items():
            module.training = mode


def _run(tracer: Tracer, model: nn.Module, example_inputs: Any, train: bool) -> None:
    counter = FlopCounterMode(display=False)
    with analysis_mode(model, train), tracer.hooks():
        with counter, tracer:  # the tracer runs each op through the counter: MACs of the same pass
            output = call_model(model, example_inputs)
    if not train:
        tracer.macs = int(counter.get_total_flops()) // 2
    for t in output_tensors(output):
        for axis in tracer.labels(t):
            tracer.store.freeze(axis, "model output")


def trace(model: nn.Module, example_inputs: Any) -> Tracer:
    """Run ``model`` once on ``example_inputs`` under a :class:`Tracer`; model outputs are frozen.

    Parameters the eval-mode pass does not reach (auxiliary classifiers) are picked up by a second pass
    with training control flow, so their inputs stay consistent with the layers that feed them.
    """
    tracer = Tracer(model)
    _run(tracer, model, example_inputs, train=False)
    tracer.recording = False  # statistics are recomputed for the eval pass only
    if tracer.untraced_params():
        try:
            _run(tracer, model, example_inputs, train=True)
        except Exception as exc:  # the training path is optional; the graph warns about what it missed
            tracer.notes.append(f"training-mode pass failed ({type(exc).__name__}: {exc})")
    return tracer
