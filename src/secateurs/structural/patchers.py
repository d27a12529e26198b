"""Module attributes that must follow the new tensor sizes (in/out features, channels, groups, heads).

A patcher is a function ``fn(module, ctx)`` registered for a module class (subclasses included); it
reads the new sizes from the module's tensors and from the facts the trace recorded for it (the input
channel axis of a convolution, the head axes of an attention) and sets attributes through ``ctx.set``
so they can be rolled back. Attention modules of any library are handled by attribute name (see
:data:`HEAD_ATTRS`); modules whose code reads sizes the trace cannot see fail verification and are
rolled back, with an error that names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from secateurs.core.targets import is_hf_conv1d
from secateurs.errors import PruningError
from secateurs.structural.graph import DependencyGraph
from secateurs.structural.surgery import Undo


class PatchContext:
    def __init__(self, graph: DependencyGraph, keep: dict[int, np.ndarray], module_name: str, undo: Undo,
                 changes: dict[str, Any]) -> None:
        self.graph, self.keep, self.module_name, self.undo = graph, keep, module_name, undo
        self.changes = changes

    def new_size(self, axis: int) -> int:
        return self.graph.store.layout(axis).new_size(self.keep)

    def old_size(self, axis: int) -> int:
        return self.graph.store.size(axis)

    def facts(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.graph.facts.get(self.module_name, []) if k == kind]

    def set(self, module: Any, attr: str, value: Any) -> None:
        if getattr(module, attr, None) != value:
            self.undo.set_attr(module, attr, value)
            self.changes[attr] = value


Patcher = Callable[[nn.Module, PatchContext], None]
_PATCHERS: dict[type, Patcher] = {}
_PATCHERS_BY_NAME: dict[str, Patcher] = {}


def register_patcher(cls: type | str) -> Callable[[Patcher], Patcher]:
    """Register ``fn(module, ctx)`` for a module class, or for a class given by ``"module.QualName"``."""

    def register(fn: Patcher) -> Patcher:
        if isinstance(cls, str):
            _PATCHERS_BY_NAME[cls] = fn
        else:
            _PATCHERS[cls] = fn
        return fn

    return register


def _find(module: nn.Module) -> Patcher | None:
    for cls in type(module).__mro__:
        fn = _PATCHERS.get(cls) or _PATCHERS_BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if fn is not None:
            return fn
    if is_hf_conv1d(module):
        return _hf_conv1d
    return None


@register_patcher(nn.Linear)
def _linear(m: nn.Linear, ctx: PatchContext) -> None:
    ctx.set(m, "out_features", m.weight.shape[0])
    ctx.set(m, "in_features", m.weight.shape[1])


def _hf_conv1d(m: nn.Module, ctx: PatchContext) -> None:
    if hasattr(m, "nf"):
        ctx.set(m, "nf", m.weight.shape[1])
    if hasattr(m, "nx"):
        ctx.set(m, "nx", m.weight.shape[0])


@register_patcher(nn.modules.conv._ConvNd)
def _conv(m: nn.modules.conv._ConvNd, ctx: PatchContext) -> None:
    facts = ctx.facts("conv")
    groups = m.groups
    if facts and facts[0]["groups"] is not None:
        groups = ctx.new_size(facts[0]["groups"])
    w = m.weight
    if m.transposed:
        ctx.set(m, "in_channels", w.shape[0])
        ctx.set(m, "out_channels", w.shape[1] * groups)
    else:
        ctx.set(m, "out_channels", w.shape[0])
        ctx.set(m, "in_channels", w.shape[1] * groups)
    ctx.set(m, "groups", groups)


@register_patcher(nn.modules.batchnorm._NormBase)
def _batch_norm(m: nn.Module, ctx: PatchContext) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        ctx.set(m, "num_features", ref.shape[0])


@register_patcher(nn.LayerNorm)
def _layer_norm(m: nn.LayerNorm, ctx: PatchContext) -> None:
    if m.weight is not None:
        ctx.set(m, "normalized_shape", tuple(m.weight.shape))


if hasattr(nn, "RMSNorm"):
    register_patcher(nn.RMSNorm)(_layer_norm)


@register_patcher(nn.GroupNorm)
def _group_norm(m: nn.GroupNorm, ctx: PatchContext) -> None:
    facts = ctx.facts("group_norm")
    if facts:
        ctx.set(m, "num_groups", ctx.new_size(facts[0]["groups"]))
    if m.weight is not None:
        ctx.set(m, "num_channels", m.weight.shape[0])


@register_patcher(nn.Embedding)
def _embedding(m: nn.Embedding, ctx: PatchContext) -> None:
    ctx.set(m, "num_embeddings", m.weight.shape[0])
    ctx.set(m, "embedding_dim", m.weight.shape[1])


register_patcher(nn.EmbeddingBag)(_embedding)


@register_patcher(nn.MultiheadAttention)
def _patch_multihead_attention(m: nn.MultiheadAttention, ctx: PatchContext) -> None:
    if m.in_proj_weight is not None:
        embed = m.in_proj_weight.shape[1]
        ctx.set(m, "embed_dim", embed)
        ctx.set(m, "kdim", embed)
        ctx.set(m, "vdim", embed)
    _attention(m, ctx)
    ctx.set(m, "head_dim", m.embed_dim // m.num_heads)


@register_patcher("torchvision.models.vision_transformer.VisionTransformer")
def _torchvision_vit(m: nn.Module, ctx: PatchContext) -> None:
    ctx.set(m, "hidden_dim", m.conv_proj.weight.shape[0])


#: Attribute names attention modules use for their head structure, across torchvision, timm and Hugging Face.
HEAD_ATTRS = {
    "heads": ("num_heads", "n_heads", "num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads"),
    "groups": ("num_key_value_groups", "n_rep", "num_queries_per_kv"),
    "head_dim": ("head_dim", "attention_head_size", "dim_head", "head_size", "d_head"),
    "width": ("all_head_size", "attn_dim", "inner_dim", "split_size"),
}


def _scaled(ctx: PatchContext, value: int, axis: int | None, what: str) -> int:
    if axis is None:
        return value
    old, new = ctx.old_size(axis), ctx.new_size(axis)
    if (value * new) % old:
        raise PruningError(f"{ctx.module_name}: {what} {value} cannot follow its axis from {old} to {new}")
    return value * new // old


def _attention(m: nn.Module, ctx: PatchContext) -> None:
    facts = ctx.facts("attention")
    if facts:
        q_heads, kv_heads, qk_dim = facts[0]["q_heads"], facts[0]["kv_heads"], facts[0]["qk_dim"]
    else:
        matmuls = ctx.facts("matmul")
        if not matmuls:
            return
        q_heads = kv_heads = matmuls[0]["batch"]
        qk_dim = matmuls[0]["contract"]
    values: dict[str, int] = {}
    for attr in HEAD_ATTRS["heads"]:
        if isinstance(getattr(m, attr, None), int):
            values["heads"] = _scaled(ctx, getattr(m, attr), q_heads, attr)
            ctx.set(m, attr, values["heads"])
    for attr in HEAD_ATTRS["kv_heads"]:
        if isinstance(getattr(m, attr, None), int):
            values["kv_heads"] = _scaled(ctx, getattr(m, attr), kv_heads, attr)
            ctx.set(m, attr, values["kv_heads"])
    for attr in HEAD_ATTRS["groups"]:
        if isinstance(getattr(m, attr, None), int) and q_heads is not None and kv_heads is not None:
            old_ratio = getattr(m, attr)
            ratio_change = (ctx.new_size(q_heads) * ctx.old_size(kv_heads)) / (ctx.old_size(q_heads) * ctx.new_size(kv_heads))
            ctx.set(m, attr, int(round(old_ratio * ratio_change)))
    head_dim = ctx.new_size(qk_dim) if qk_dim is not None else None
    for attr in HEAD_ATTRS["head_dim"]:
        if isinstance(getattr(m, attr, None), int) and head_dim is not None:
            ctx.set(m, attr, head_dim)
    heads = values.get("heads")
    for attr in HEAD_ATTRS["width"]:
        if isinstance(getattr(m, attr, None), int) and heads is not None and head_dim is not None:
            ctx.set(m, attr, heads * head_dim)


def patch_modules(graph: DependencyGraph, keep: dict[int, np.ndarray], changed: dict[str, Any],
                  undo: Undo) -> dict[str, dict[str, Any]]:
    """Run the patcher of every module that holds a changed tensor or whose recorded axes changed.
    Returns the attributes set, per module."""
    touched = {h.module_name for name in changed for h in graph.holders[name]}
    kept = set(keep)
    for module_name, facts in graph.facts.items():
        for _, data in facts:
            axes = [v for v in data.values() if isinstance(v, int) and not isinstance(v, bool)]
            if any(graph.store.atoms(a) & kept for a in axes):
                touched.add(module_name)
    attrs: dict[str, dict[str, Any]] = {}
    for module_name in sorted(touched):
        module = graph.named.get(module_name)
        if module is None:
            continue
        changes: dict[str, Any] = {}
        ctx = PatchContext(graph, keep, module_name, undo, changes)
        fn = _find(module)
        if fn is not None:
            fn(module, ctx)
        if fn is not _patch_multihead_attention and (ctx.facts("attention") or ctx.facts("matmul")):
            _attention(module, ctx)
        attrs[module_name] = changes
    return attrs
