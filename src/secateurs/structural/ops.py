"""How each ATen operation ties the channel axes of its inputs and outputs.

One rule per operation family. A rule receives the tracer (which hands out and stores axes) and the
call (the operation, its arguments by schema name, its output) and must label every output dimension.
Rules are exact about what they understand: a dimension whose positions an operation mixes (a
reduction, a roll, a data-dependent lookup) is frozen with a reason, never guessed. Operations with no
rule go to the tracer's unknown-operation path, which is an error unless nothing prunable reaches them.

Two kinds of pinning: ``tr.freeze`` for positions that must stay where they are (lookups, rolls, model
inputs and outputs), and ``tr.stat`` for statistics over a dimension (sums, means, norms, softmax, the
default attention scale). A statistic can be recomputed over the kept positions only, so with
``prune_normalized=True`` its dimension may still be pruned and verification recomputes it that way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from secateurs.structural.axes import CAT, PROD

if TYPE_CHECKING:
    from secateurs.structural.trace import OpCall, Tracer

Rule = Callable[["Tracer", "OpCall"], None]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def _dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _dims(dims: Any, ndim: int) -> list[int]:
    if dims is None:
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    dims = [_dim(d, ndim) for d in dims]
    return dims if dims else list(range(ndim))


def broadcast(tr: Tracer, tensors: Sequence[torch.Tensor], shape: Sequence[int]) -> list[int]:
    """Labels of a broadcast result: dimensions of equal size are tied position by position."""
    ndim = len(shape)
    labels = []
    for i, size in enumerate(shape):
        axes = []
        for t in tensors:
            k = i - (ndim - t.dim())
            if k >= 0 and t.shape[k] == size and size != 1:
                axes.append(tr.labels(t)[k])
        if not axes:
            labels.append(tr.fresh(size, None if size > 1 else "single position"))
            continue
        for axis in axes[1:]:
            tr.store.unify(axes[0], axis)
        labels.append(axes[0])
    return labels


# ---------------------------------------------------------------------------------------------
# elementwise
POINTWISE = """
abs neg relu relu_ gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_ hardsigmoid
hardsigmoid_ hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ mish mish_ softplus
exp exp_ expm1 log log_ log1p log2 sqrt sqrt_ rsqrt rsqrt_ cos sin tan erf erfinv reciprocal sign sgn floor
ceil round trunc frac clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ pow pow_ add add_ sub sub_
rsub mul mul_ div div_ maximum minimum fmax fmin remainder fmod floor_divide eq ne lt le gt ge
logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_not bitwise_xor where
masked_fill masked_fill_ addcmul addcmul_ addcdiv addcdiv_ lerp lerp_ atan2 hypot xlogy square isnan
isinf isfinite nan_to_num fill_ zero_ copy_ _to_copy clone alias detach lift_fresh lift_fresh_copy
dropout native_dropout alpha_dropout threshold logit sinc positive _conj bernoulli_ zeros_like ones_like
empty_like full_like rand_like randn_like _log_softmax_backward_data
""".split()


@rule(*POINTWISE)
def pointwise(tr: Tracer, call: OpCall) -> None:
    result = call.outputs[0]
    labels = broadcast(tr, call.tensor_args(), result.shape)
    for out in call.outputs:
        if out.shape == result.shape:
            tr.assign(out, labels)


@rule("glu")
def glu(tr: Tracer, call: OpCall) -> None:
    """``a * sigmoid(b)`` of the two halves: the halves are tied channel by channel."""
    x = call.arg("self")
    dim = _dim(call.arg("dim"), x.dim())
    labels = list(tr.labels(x))
    half = x.shape[dim] // 2
    first, second = tr.store.refine(labels[dim], CAT, [half, half])
    tr.store.unify(first, second)
    labels[dim] = first
    tr.assign(call.outputs[0], labels)


# ---------------------------------------------------------------------------------------------
# reductions: positions along the reduced dimensions are mixed, so those axes are frozen
def _reduce(tr: Tracer, call: OpCall, x: torch.Tensor, dims: list[int], keepdim: bool, what: str) -> None:
    labels = tr.labels(x)
    for d in dims:
        tr.stat(labels[d], what)
    out_labels = []
    for i, axis in enumerate(labels):
        if i in dims:
            if keepdim:
                out_labels.append(tr.fresh(1))
        else:
            out_labels.append(axis)
    for out in call.outputs:
        if out.dim() == len(out_labels):
            tr.assign(out, out_labels)


@rule("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "var", "std", "var_mean", "std_mean",
      "linalg_vector_norm", "norm", "logsumexp", "prod", "any", "all", "count_nonzero", "nansum", "median",
      "aminmax", "_local_scalar_dense")
def reduction(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    if len(call.tensor_args()) > 1:  # maximum-like overloads (max.other, min.other)
        pointwise(tr, call)
        return
    dims = call.arg("dim", None)
    keepdim = bool(call.arg("keepdim", False))
    if call.packet == "_local_scalar_dense" or x.dim() == 0:
        dims, keepdim = list(range(x.dim())), False
    _reduce(tr, call, x, _dims(dims, x.dim()), keepdim, f"reduction {call.packet}")


@rule("_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax", "cumsum", "cumprod", "cummax",
      "cummin", "logcumsumexp")
def along_dim(tr: Tracer, call: OpCall) -> None:
    """Same shape, but every output position depends on the whole dimension."""
    x = call.arg("self")
    labels = tr.labels(x)
    tr.stat(labels[_dim(call.arg("dim"), x.dim())], f"{call.packet} over the dimension")
    for out in call.outputs:
        tr.assign(out, labels)


@rule("sort", "topk", "kthvalue", "argsort")
def selection_along_dim(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    dim = _dim(call.arg("dim", -1), x.dim())
    labels = list(tr.labels(x))
    tr.freeze(labels[dim], f"{call.packet} over the dimension")
    for out in call.outputs:
        if out.dim() == x.dim():
            out_labels = list(labels)
            out_labels[dim] = tr.fresh(out.shape[dim], f"positions chosen by {call.packet}")
            tr.assign(out, out_labels)


@rule("tril", "triu", "tril_", "triu_")
def triangle(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    labels = tr.labels(x)
    for axis in labels[-2:]:
        tr.freeze(axis, f"{call.packet} mask depends on position")
    tr.assign(call.outputs[0], labels)


# ---------------------------------------------------------------------------------------------
# matrix products
def _contract(tr: Tracer, a: int, b: int) -> None:
    tr.store.unify(a, b)


@rule("mm", "addmm", "_addmm_activation")
def mm(tr: Tracer, call: OpCall) -> None:
    a, b = call.arg("mat1" if "mat1" in call.args else "self"), call.arg("mat2")
    la, lb = tr.labels(a), tr.labels(b)
    _contract(tr, la[1], lb[0])
    out = call.outputs[0]
    labels = [la[0], lb[1]]
    if call.packet != "mm":
        for x, y in zip(broadcast(tr, [call.arg("self")], out.shape), labels):
            tr.store.unify(x, y)
    tr.assign(out, labels)


@rule("bmm", "baddbmm")
def bmm(tr: Tracer, call: OpCall) -> None:
    a, b = (call.arg("batch1"), call.arg("batch2")) if call.packet == "baddbmm" else (call.arg("self"), call.arg("mat2"))
    la, lb = tr.labels(a), tr.labels(b)
    tr.store.unify(la[0], lb[0])
    _contract(tr, la[2], lb[1])
    out = call.outputs[0]
    labels = [la[0], la[1], lb[2]]
    if call.packet == "baddbmm":
        bias_labels = broadcast(tr, [call.arg("self")], out.shape)
        for x, y in zip(labels, bias_labels):
            tr.store.unify(x, y)
    tr.fact("matmul", batch=la[0], contract=la[2], rows=la[1], cols=lb[2])
    tr.assign(out, labels)


@rule("mv", "dot", "vdot")
def mv(tr: Tracer, call: OpCall) -> None:
    a, b = call.tensor_args()[:2]
    la, lb = tr.labels(a), tr.labels(b)
    _contract(tr, la[-1], lb[0])
    tr.assign(call.outputs[0], la[:-1])


@rule("linear")
def linear(tr: Tracer, call: OpCall) -> None:
    x, w, bias = call.arg("input"), call.arg("weight"), call.arg("bias", None)
    lx, lw = tr.labels(x), tr.labels(w)
    _contract(tr, lx[-1], lw[1])
    if bias is not None:
        tr.store.unify(tr.labels(bias)[0], lw[0])
    tr.assign(call.outputs[0], [*lx[:-1], lw[0]])


# ---------------------------------------------------------------------------------------------
# convolution
@rule("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
      "conv_transpose3d", "mkldnn_convolution", "_slow_conv2d_forward", "thnn_conv2d")
def convolution(tr: Tracer, call: OpCall) -> None:
    x, w, bias = call.arg("input" if "input" in call.args else "self"), call.arg("weight"), call.arg("bias", None)
    transposed = bool(call.arg("transposed", call.packet.startswith("conv_transpose")))
    groups = int(call.arg("groups", 1))
    spatial = w.dim() - 2
    c_dim = x.dim() - spatial - 1
    lx, lw = tr.labels(x), tr.labels(w)
    for axis in lw[2:]:
        tr.freeze(axis, "convolution kernel window")
    in_w, out_w = (0, 1) if transposed else (1, 0)
    out_axis = tr.fresh(w.shape[out_w] * groups) if transposed else lw[0]
    if groups == 1:
        tr.store.unify(lx[c_dim], lw[0] if transposed else lw[1])
        group_axis = None
        if transposed:
            tr.store.unify(out_axis, lw[1])
    else:
        if transposed:
            g_in, _ = tr.store.refine(lw[0], PROD, [groups, w.shape[0] // groups])
            g_out, per_out = tr.store.refine(out_axis, PROD, [groups, w.shape[1]])
            tr.store.unify(per_out, lw[1])
            tr.store.unify(lx[c_dim], lw[0])
        else:
            g_in, per_in = tr.store.refine(lx[c_dim], PROD, [groups, w.shape[1]])
            tr.store.unify(per_in, lw[1])
            g_out, _ = tr.store.refine(lw[0], PROD, [groups, w.shape[0] // groups])
        tr.store.unify(g_in, g_out)
        group_axis = g_in
    if bias is not None:
        tr.store.unify(tr.labels(bias)[0], out_axis)
    out = call.outputs[0]
    labels = [*lx[:c_dim], out_axis, *(tr.fresh(s, "spatial position") for s in out.shape[c_dim + 1:])]
    tr.fact("conv", input=lx[c_dim], output=out_axis, groups=group_axis, transposed=transposed)
    tr.assign(out, labels)


# ---------------------------------------------------------------------------------------------
# normalisation
@rule("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
      "_native_batch_norm_legit_functional", "batch_norm", "cudnn_batch_norm", "miopen_batch_norm",
      "_batch_norm_with_update", "_batch_norm_no_update")
def batch_norm(tr: Tracer, call: OpCall) -> None:
    x = call.arg("input")
    channel = tr.labels(x)[1] if x.dim() > 1 else tr.labels(x)[0]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = call.arg(name, None)
        if isinstance(t, torch.Tensor) and t.numel():
            tr.store.unify(tr.labels(t)[0], channel)
    tr.fact("norm", channels=channel)
    tr.assign(call.outputs[0], tr.labels(x))
    for extra in call.outputs[1:]:
        if extra.dim() == 1 and extra.shape[0] == x.shape[1]:
            tr.assign(extra, [channel])


@rule("native_layer_norm", "_fused_rms_norm", "layer_norm", "rms_norm")
def layer_norm(tr: Tracer, call: OpCall) -> None:
    x = call.arg("input")
    k = len(call.arg("normalized_shape"))
    labels = tr.labels(x)
    normed = labels[x.dim() - k:]
    for axis in normed:
        tr.stat(axis, "normalised by a layer norm")
    for name in ("weight", "bias"):
        t = call.arg(name, None)
        if isinstance(t, torch.Tensor):
            for a, b in zip(tr.labels(t), normed):
                tr.store.unify(a, b)
    tr.fact("norm", channels=normed[-1])
    tr.assign(call.outputs[0], labels)
    for extra in call.outputs[1:]:
        if extra.dim() == x.dim():
            tr.assign(extra, [*labels[: x.dim() - k], *(tr.fresh(1) for _ in range(k))])


@rule("native_group_norm", "group_norm")
def group_norm(tr: Tracer, call: OpCall) -> None:
    """Statistics are per group: whole groups may go, channels inside a group may not."""
    x = call.arg("input")
    groups = int(call.arg("group" if "group" in call.args else "num_groups"))
    labels = tr.labels(x)
    g_axis, within = tr.store.refine(labels[1], PROD, [groups, x.shape[1] // groups])
    tr.stat(within, "normalised within a group-norm group")
    for name in ("weight", "bias"):
        t = call.arg(name, None)
        if isinstance(t, torch.Tensor):
            tr.store.unify(tr.labels(t)[0], labels[1])
    tr.fact("group_norm", channels=labels[1], groups=g_axis)
    tr.assign(call.outputs[0], labels)
    for extra in call.outputs[1:]:
        if extra.dim() == 2:
            tr.assign(extra, [labels[0], g_axis])


# ---------------------------------------------------------------------------------------------
# lookups and indexing
@rule("embedding")
def embedding(tr: Tracer, call: OpCall) -> None:
    w, idx = call.arg("weight"), call.arg("indices")
    lw = tr.labels(w)
    tr.freeze(lw[0], "embedding rows are looked up by token id")
    tr.assign(call.outputs[0], [*tr.labels(idx), lw[1]])


@rule("index")
def index(tr: Tracer, call: OpCall) -> None:
    x, indices = call.arg("self"), list(call.arg("indices"))
    labels = tr.labels(x)
    out = call.outputs[0]
    if any(ix is not None and ix.dtype == torch.bool for ix in indices):
        covered, pos = [], 0
        for ix in indices:
            width = 1 if ix is None else (ix.dim() if ix.dtype == torch.bool else 1)
            if ix is not None:
                covered.extend(range(pos, pos + width))
            pos += width
        for d in covered:
            tr.freeze(labels[d], "selected by a boolean mask")
        tr.assign(out, [tr.fresh(s, "selected by a boolean mask") for s in out.shape])
        return
    used = [i for i, ix in enumerate(indices) if ix is not None]
    for d in used:
        tr.freeze(labels[d], "looked up by index")
    index_tensors = [indices[i] for i in used]
    shape = torch.broadcast_shapes(*(t.shape for t in index_tensors))
    index_labels = broadcast(tr, index_tensors, shape)
    rest = [labels[i] for i in range(x.dim()) if i not in used]
    if used == list(range(used[0], used[-1] + 1)):
        out_labels = [*labels[: used[0]], *index_labels, *labels[used[-1] + 1:]]
    else:
        out_labels = [*index_labels, *rest]
    tr.assign(out, out_labels)


@rule("index_select")
def index_select(tr: Tracer, call: OpCall) -> None:
    x, idx = call.arg("self"), call.arg("index")
    dim = _dim(call.arg("dim"), x.dim())
    labels = list(tr.labels(x))
    tr.freeze(labels[dim], "looked up by index")
    labels[dim] = tr.labels(idx)[0] if idx.dim() else tr.fresh(1)
    tr.assign(call.outputs[0], labels)


@rule("gather")
def gather(tr: Tracer, call: OpCall) -> None:
    x, idx = call.arg("self"), call.arg("index")
    dim = _dim(call.arg("dim"), x.dim())
    lx, li = tr.labels(x), tr.labels(idx)
    tr.freeze(lx[dim], "gathered by index")
    for d in range(x.dim()):
        if d != dim and x.shape[d] == idx.shape[d]:
            tr.store.unify(lx[d], li[d])
        elif d != dim:
            tr.freeze(lx[d], "partly gathered")
    tr.assign(call.outputs[0], li)


@rule("scatter", "scatter_", "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_", "index_add",
      "index_add_", "index_copy", "index_copy_", "index_fill", "index_fill_", "index_put", "index_put_",
      "_index_put_impl_", "masked_scatter", "masked_scatter_")
def scatter(tr: Tracer, call: OpCall) -> None:
    """Writes at data-dependent positions: the written dimensions are frozen."""
    x = call.arg("self")
    labels = tr.labels(x)
    if "dim" in call.args:
        written = [_dim(call.arg("dim"), x.dim())]
    elif "indices" in call.args:
        written = [i for i, ix in enumerate(call.arg("indices")) if ix is not None]
    else:
        written = list(range(x.dim()))
    for d in written:
        tr.freeze(labels[d], f"written at positions chosen by {call.packet}")
    for t in call.tensor_args()[1:]:
        for k in range(1, min(t.dim(), x.dim()) + 1):
            if t.shape[-k] == x.shape[-k] and (x.dim() - k) not in written:
                tr.store.unify(tr.labels(t)[-k], labels[-k])
            else:
                tr.freeze(tr.labels(t)[-k], f"written by {call.packet}")
    tr.assign(call.outputs[0], labels)


# ---------------------------------------------------------------------------------------------
# views and layout
def reshape_labels(tr: Tracer, shape_in: Sequence[int], labels: Sequence[int], shape_out: Sequence[int]) -> list[int]:
    """Labels after a view/reshape: merged dimensions become products, split ones are refined."""
    out: list[int | None] = [None] * len(shape_out)
    for j, size in enumerate(shape_out):
        if size == 1:
            out[j] = tr.fresh(1)
    src = [(i, s) for i, s in enumerate(shape_in) if s != 1]
    dst = [(j, s) for j, s in enumerate(shape_out) if s != 1]
    p = q = 0
    while p < len(src) and q < len(dst):
        group_in, group_out = [src[p]], [dst[q]]
        size_in, size_out = src[p][1], dst[q][1]
        p, q = p + 1, q + 1
        while size_in != size_out:
            if size_in < size_out:
                group_in.append(src[p])
                size_in *= src[p][1]
                p += 1
            else:
                group_out.append(dst[q])
                size_out *= dst[q][1]
                q += 1
        merged = tr.store.make(PROD, [labels[i] for i, _ in group_in])
        if len(group_out) == 1:
            out[group_out[0][0]] = merged
        else:
            for (j, _), part in zip(group_out, tr.store.refine(merged, PROD, [s for _, s in group_out])):
                out[j] = part
    return [axis if axis is not None else tr.fresh(shape_out[j]) for j, axis in enumerate(out)]


@rule("view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "flatten", "unflatten", "_reshape_copy")
def view(tr: Tracer, call: OpCall) -> None:
    x, out = call.tensor_args()[0], call.outputs[0]
    if x.dtype != out.dtype and x.element_size() != out.element_size():
        tr.unknown(call)
        return
    if x.numel() == 0:
        tr.assign(out, [tr.fresh(s, "empty tensor") for s in out.shape])
        return
    tr.assign(out, reshape_labels(tr, x.shape, tr.labels(x), out.shape))


@rule("as_strided", "as_strided_")
def as_strided(tr: Tracer, call: OpCall) -> None:
    """Only the memory-format-only case (same sizes, no offset) is understood."""
    x, out = call.arg("self"), call.outputs[0]
    if tuple(out.shape) == tuple(x.shape) and not call.arg("storage_offset", None):
        tr.assign(out, tr.labels(x))
    else:
        tr.unknown(call)


@rule("permute", "transpose", "transpose_", "t", "t_", "numpy_T", "movedim", "swapaxes", "swapdims", "mT", "adjoint")
def permute(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    labels = tr.labels(x)
    n = x.dim()
    if call.packet == "permute":
        order = [_dim(d, n) for d in call.arg("dims")]
    elif call.packet in ("transpose", "transpose_", "swapaxes", "swapdims"):
        names = ("dim0", "dim1") if "dim0" in call.args else ("axis0", "axis1")
        a, b = (_dim(call.arg(k), n) for k in names)
        order = list(range(n))
        order[a], order[b] = order[b], order[a]
    elif call.packet == "movedim":
        src = _dims(call.arg("source"), n)
        dst = _dims(call.arg("destination"), n)
        order = [None] * n
        for s, d in zip(src, dst):
            order[d] = s
        rest = iter(i for i in range(n) if i not in src)
        order = [o if o is not None else next(rest) for o in order]
    elif call.packet in ("mT", "adjoint"):
        order = [*range(n - 2), n - 1, n - 2]
    else:
        order = list(reversed(range(n)))
    tr.assign(call.outputs[0], [labels[i] for i in order])


@rule("squeeze", "squeeze_", "unsqueeze", "unsqueeze_")
def squeeze(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    labels = list(tr.labels(x))
    if call.packet.startswith("unsqueeze"):
        labels.insert(_dim(call.arg("dim"), out.dim()), tr.fresh(1))
    else:
        dims = call.arg("dim", None)
        dims = range(x.dim()) if dims is None else _dims(dims, x.dim())
        drop = {d for d in dims if x.shape[d] == 1}
        labels = [a for i, a in enumerate(labels) if i not in drop]
    tr.assign(out, labels)


@rule("expand", "expand_as", "broadcast_to")
def expand_view(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    labels = tr.labels(x)
    lead = out.dim() - x.dim()
    result = []
    for i, size in enumerate(out.shape):
        k = i - lead
        if k >= 0 and x.shape[k] == size:
            result.append(labels[k])
        else:
            result.append(tr.fresh(size, None if size > 1 else "single position"))  # a broadcast copy
    tr.assign(out, result)


@rule("repeat")
def repeat(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    repeats = list(call.arg("repeats"))
    labels = tr.labels(x)
    lead = len(repeats) - x.dim()
    result = []
    for i, times in enumerate(repeats):
        k = i - lead
        if k < 0:
            result.append(tr.fresh(times))
        elif times == 1:
            result.append(labels[k])
        else:
            result.append(tr.store.make(PROD, [tr.fresh(times), labels[k]]))
    tr.assign(out, result)


@rule("repeat_interleave")
def repeat_interleave(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self", None), call.outputs[0]
    repeats, dim = call.arg("repeats"), call.arg("dim", None)
    if x is None or dim is None or isinstance(repeats, torch.Tensor):
        tr.unknown(call)
        return
    dim = _dim(dim, x.dim())
    labels = list(tr.labels(x))
    labels[dim] = tr.store.make(PROD, [labels[dim], tr.fresh(int(repeats))])
    tr.assign(out, labels)


@rule("select", "select_copy")
def select_position(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    dim = _dim(call.arg("dim"), x.dim())
    labels = list(tr.labels(x))
    tr.freeze(labels[dim], "one position is selected")
    del labels[dim]
    tr.assign(call.outputs[0], labels)


def _cut_axis(tr: Tracer, axis: int, sizes: list[int], what: str) -> list[int]:
    """Cut an axis into consecutive pieces. Equal pieces are tied so their sizes stay equal after
    pruning (``chunk``, ``split(n)`` and half-slices compute their sizes from the tensor); any other
    cut has sizes the code may hold as constants, so the axis is frozen."""
    nonzero = [s for s in sizes if s]
    if len(nonzero) > 1 and len(set(nonzero)) == 1:
        parts = tr.store.refine(axis, CAT, sizes)
        real = [p for p, s in zip(parts, sizes) if s]
        for p in real[1:]:
            tr.store.unify(real[0], p)
        return parts
    if len(nonzero) > 1:
        tr.freeze(axis, f"cut into unequal pieces by {what}")
    return tr.store.refine(axis, CAT, sizes)


@rule("slice", "slice_copy", "narrow")
def slice_(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    dim = _dim(call.arg("dim", 0), x.dim())
    n = x.shape[dim]
    labels = list(tr.labels(x))
    if out.shape[dim] == n:
        tr.assign(out, labels)
        return
    if call.packet == "narrow":
        start = _dim(int(call.arg("start")), n)
        end, step = start + int(call.arg("length")), 1
    else:
        start, end, step = call.arg("start", None), call.arg("end", None), call.arg("step", 1)
        start = 0 if start is None else min(max(_dim(start, n), 0), n)
        end = n if end is None else min(max(_dim(end, n) if end < 0 else end, 0), n)
    if step != 1:
        tr.freeze(labels[dim], "strided slice")
        labels[dim] = tr.fresh(out.shape[dim], "strided slice")
    else:
        labels[dim] = _cut_axis(tr, labels[dim], [start, end - start, n - end], "slicing")[1]
    tr.assign(out, labels)


@rule("split", "split_with_sizes", "unsafe_split", "split_copy", "split_with_sizes_copy", "unbind", "unbind_copy")
def split(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    dim = _dim(call.arg("dim", 0), x.dim())
    labels = list(tr.labels(x))
    outs = call.outputs
    if call.packet.startswith("unbind"):
        tr.freeze(labels[dim], "unbound into separate tensors")
        for out in outs:
            tr.assign(out, labels[:dim] + labels[dim + 1:])
        return
    sizes = [o.shape[dim] for o in outs]
    pieces = _cut_axis(tr, labels[dim], sizes, call.packet) if len(outs) > 1 else [labels[dim]]
    for out, piece in zip(outs, pieces):
        tr.assign(out, [*labels[:dim], piece, *labels[dim + 1:]])


@rule("cat", "concat", "concatenate")
def cat(tr: Tracer, call: OpCall) -> None:
    out = call.outputs[0]
    tensors = [t for t in call.arg("tensors") if not (t.dim() == 1 and t.numel() == 0)]
    dim = _dim(call.arg("dim", 0), out.dim())
    first = tr.labels(tensors[0])
    for t in tensors[1:]:
        for d, axis in enumerate(tr.labels(t)):
            if d != dim:
                tr.store.unify(first[d], axis)
    labels = list(first)
    labels[dim] = tr.store.make(CAT, [tr.labels(t)[dim] for t in tensors])
    tr.fact("cat", axis=labels[dim])
    tr.assign(out, labels)


@rule("stack")
def stack(tr: Tracer, call: OpCall) -> None:
    out = call.outputs[0]
    tensors = list(call.arg("tensors"))
    dim = _dim(call.arg("dim", 0), out.dim())
    first = tr.labels(tensors[0])
    for t in tensors[1:]:
        for a, b in zip(first, tr.labels(t)):
            tr.store.unify(a, b)
    labels = list(first)
    labels.insert(dim, tr.fresh(len(tensors), "stacked tensors"))
    tr.assign(out, labels)


@rule("roll", "flip", "fliplr", "flipud", "rot90")
def roll(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    labels = tr.labels(x)
    dims = call.arg("dims", None)
    for d in _dims(dims, x.dim()) if dims is not None else range(x.dim()):
        tr.freeze(labels[d], f"positions moved by {call.packet}")
    tr.assign(call.outputs[0], labels)


@rule("constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
      "replication_pad2d", "replication_pad3d", "_pad_circular", "pad")
def pad(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self" if "self" in call.args else "input"), call.outputs[0]
    pads = list(call.arg("pad" if "pad" in call.args else "padding"))
    labels = list(tr.labels(x))
    for k in range(len(pads) // 2):
        d = x.dim() - 1 - k
        if pads[2 * k] or pads[2 * k + 1]:
            tr.freeze(labels[d], f"padded by {call.packet}")
            labels[d] = tr.fresh(out.shape[d], f"padded by {call.packet}")
    tr.assign(out, labels)


@rule("pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    labels = tr.labels(x)
    c = x.dim() - 3
    if call.packet == "pixel_shuffle":
        r = int(call.arg("upscale_factor"))
        channels, *sub = tr.store.refine(labels[c], PROD, [out.shape[c], r, r])
        for axis in sub:
            tr.freeze(axis, "moved into space by pixel_shuffle")
    else:
        r = int(call.arg("downscale_factor"))
        channels = tr.store.make(PROD, [labels[c], tr.fresh(r * r, "moved from space by pixel_unshuffle")])
    for axis in labels[c + 1:]:
        tr.freeze(axis, "spatial position")
    tr.assign(out, [*labels[:c], channels, *(tr.fresh(s, "spatial position") for s in out.shape[c + 1:])])


@rule("channel_shuffle", "native_channel_shuffle")
def channel_shuffle(tr: Tracer, call: OpCall) -> None:
    x = call.arg("self")
    groups = int(call.arg("groups"))
    labels = list(tr.labels(x))
    g, per = tr.store.refine(labels[1], PROD, [groups, x.shape[1] // groups])
    labels[1] = tr.store.make(PROD, [per, g])
    tr.assign(call.outputs[0], labels)


# ---------------------------------------------------------------------------------------------
# pooling and resampling: mix spatial positions, channels pass through
def _spatial_rule(count: int) -> Rule:
    def spatial(tr: Tracer, call: OpCall) -> None:
        x = call.arg("self" if "self" in call.args else "input")
        labels = tr.labels(x)
        keep = x.dim() - count
        for axis in labels[keep:]:
            tr.freeze(axis, f"spatial position mixed by {call.packet}")
        for out in call.outputs:
            if out.dim() == x.dim():
                tr.assign(out, [*labels[:keep], *(tr.fresh(s, "spatial position") for s in out.shape[keep:])])

    return spatial


for _n in (1, 2, 3):
    _names = [
        f"max_pool{_n}d", f"max_pool{_n}d_with_indices", f"avg_pool{_n}d", f"adaptive_avg_pool{_n}d",
        f"_adaptive_avg_pool{_n}d", f"adaptive_max_pool{_n}d", f"lp_pool{_n}d", f"fractional_max_pool{_n}d",
        f"upsample_nearest{_n}d", f"_upsample_nearest_exact{_n}d", f"mkldnn_max_pool{_n}d",
    ]
    for _name in _names:
        RULES[_name] = _spatial_rule(_n)
for _name in ("upsample_linear1d",):
    RULES[_name] = _spatial_rule(1)
for _name in ("upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
              "grid_sampler_2d"):
    RULES[_name] = _spatial_rule(2)
RULES["upsample_trilinear3d"] = _spatial_rule(3)


@rule("im2col")
def im2col(tr: Tracer, call: OpCall) -> None:
    x, out = call.arg("self"), call.outputs[0]
    labels = tr.labels(x)
    c = x.dim() - 3
    for axis in labels[c + 1:]:
        tr.freeze(axis, "spatial position")
    window = out.shape[c] // x.shape[c]
    channels = tr.store.make(PROD, [labels[c], tr.fresh(window, "kernel window")])
    tr.assign(out, [*labels[:c], channels, tr.fresh(out.shape[-1], "spatial position")])


# ---------------------------------------------------------------------------------------------
# attention
@rule("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
      "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
      "_scaled_dot_product_attention_math", "scaled_dot_product_attention", "_scaled_dot_product_fused_attention_overrideable")
def attention(tr: Tracer, call: OpCall) -> None:
    q, k, v = call.arg("query"), call.arg("key"), call.arg("value")
    lq, lk, lv = tr.labels(q), tr.labels(k), tr.labels(v)
    batch = q.dim() - 2
    heads_q, heads_kv = lq[batch - 1] if batch else None, lk[batch - 1] if batch else None
    for i in range(batch):
        qi, ki = i, i - (q.dim() - k.dim())
        if ki < 0:
            continue
        if q.shape[qi] == k.shape[ki]:
            tr.store.unify(lq[qi], lk[ki])
        elif q.shape[qi] % k.shape[ki] == 0 and k.shape[ki] > 1:  # grouped-query attention
            tr.store.unify(lq[qi], tr.store.make(PROD, [lk[ki], tr.fresh(q.shape[qi] // k.shape[ki])]))
        elif k.shape[ki] != 1:
            tr.unknown(call)
            return
        if v.shape[ki] == k.shape[ki]:
            tr.store.unify(lk[ki], lv[ki])
    tr.store.unify(lk[-2], lv[-2])
    tr.store.unify(lq[-1], lk[-1])
    if q.shape[-1] == v.shape[-1]:  # attention modules hold one head_dim for queries, keys and values
        tr.store.unify(lq[-1], lv[-1])
    tr.freeze(lk[-2], "softmax over the key positions")
    if call.arg("is_causal", False):
        tr.freeze(lq[-2], "causal mask depends on position")
    if call.arg("scale", None) is None:
        tr.stat(lq[-1], "default attention scale 1/sqrt(head_dim)")
    mask = call.arg("attn_mask", call.arg("attn_bias", None))
    out = call.outputs[0]
    if isinstance(mask, torch.Tensor):
        scores_shape = (*q.shape[:-1], k.shape[-2])
        mask_labels = broadcast(tr, [mask], scores_shape)
        for a, b in zip(mask_labels, [*lq[:-1], lk[-2]]):
            if mask.dim() and tr.store.size(a) == tr.store.size(b):
                tr.store.unify(a, b)
    tr.fact("attention", q_heads=heads_q, kv_heads=heads_kv, qk_dim=lq[-1], v_dim=lv[-1])
    tr.assign(out, [*lq[:-1], lv[-1]])
    for extra in call.outputs[1:]:
        if extra.dim() == q.dim() - 1 and tuple(extra.shape) == tuple(q.shape[:-1]):
            tr.assign(extra, lq[:-1])


# ---------------------------------------------------------------------------------------------
# tensors made inside forward
FACTORIES = """
empty zeros ones full arange rand randn randint randperm scalar_tensor eye linspace logspace empty_strided
new_zeros new_ones new_empty new_full new_empty_strided tensor normal bernoulli multinomial _efficientzerotensor
""".split()


@rule(*FACTORIES)
def factory(tr: Tracer, call: OpCall) -> None:
    for out in call.outputs:
        tr.assign(out, [tr.fresh(s, "tensor created inside forward") for s in out.shape])


@rule("_assert_async", "_assert_scalar", "_functional_assert_async", "sym_constrain_range", "record_stream",
      "_assert_tensor_metadata", "resize_", "set_")
def no_effect(tr: Tracer, call: OpCall) -> None:
    for out in call.outputs:
        tr.assign(out, [tr.fresh(s, "untracked") for s in out.shape])
