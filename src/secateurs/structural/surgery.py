"""Physically remove units: slice parameters, buffers and masks, then fix module attributes.

Every change goes through an :class:`Undo` log, so a failed verification (or any error part-way) puts
the model back exactly as it was: same parameter objects, same buffers, same attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from secateurs.core.masks import get_mask, set_mask
from secateurs.structural.graph import DependencyGraph

_ABSENT = object()


@dataclass
class Undo:
    """A log of reversible edits, replayed backwards by :meth:`rollback`."""

    steps: list[Callable[[], None]] = field(default_factory=list)

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        old = getattr(obj, name, _ABSENT)
        self.steps.append(lambda: delattr(obj, name) if old is _ABSENT else setattr(obj, name, old))
        setattr(obj, name, value)

    def set_entry(self, table: dict, key: str, value: Any) -> None:
        old = table.get(key, _ABSENT)
        self.steps.append(lambda: table.pop(key, None) if old is _ABSENT else table.__setitem__(key, old))
        table[key] = value

    def call(self, undo: Callable[[], None]) -> None:
        self.steps.append(undo)

    def rollback(self) -> None:
        while self.steps:
            self.steps.pop()()


def kept_positions(graph: DependencyGraph, name: str, keep: dict[int, np.ndarray]) -> list[np.ndarray | None]:
    """Per dimension of a traced tensor: the positions kept, or None where nothing is removed."""
    result: list[np.ndarray | None] = []
    for layout in graph.layouts.get(name, []):
        if layout.classes() & keep.keys():
            positions = layout.kept_positions(keep)
            result.append(positions if len(positions) < layout.size else None)
        else:
            result.append(None)
    return result


def slice_tensor(tensor: torch.Tensor, positions: list[np.ndarray | None]) -> torch.Tensor:
    out = tensor.detach()
    for dim, pos in enumerate(positions):
        if pos is not None:
            out = out.index_select(dim, torch.as_tensor(pos, dtype=torch.long, device=out.device))
    return out.clone(memory_format=torch.contiguous_format)


def slice_tensors(graph: DependencyGraph, keep: dict[int, np.ndarray], undo: Undo) -> dict[str, list[np.ndarray | None]]:
    """Replace every affected parameter and buffer (all holders of tied ones) by its kept slice.

    Unstructured masks already on a parameter are sliced the same way and set again.
    """
    named = dict(graph.model.named_modules(remove_duplicate=False))
    changed: dict[str, list[np.ndarray | None]] = {}
    for name in graph.layouts:
        positions = kept_positions(graph, name, keep)
        if all(p is None for p in positions):
            continue
        changed[name] = positions
        old = graph.tensors[name]
        new_data = slice_tensor(old, positions)
        holders = graph.holders[name]
        if holders[0].kind == "param":
            new: torch.Tensor = nn.Parameter(new_data, requires_grad=old.requires_grad)
        else:
            new = new_data
        masks = []
        for holder in holders:
            module = named[holder.module_name]
            mask = get_mask(module, holder.attr) if holder.kind == "param" else None
            if mask is not None:
                masks.append((module, holder.attr, slice_tensor(mask, positions)))
                # registered before the parameter swap, so rollback restores the parameter first
                undo.call(lambda module=module, attr=holder.attr, mask=mask: set_mask(module, attr, mask))
        for holder in holders:
            module = named[holder.module_name]
            table = module._parameters if holder.kind == "param" else module._buffers
            undo.set_entry(table, holder.attr, new)
        for module, attr, mask in masks:
            set_mask(module, attr, mask)
    return changed
