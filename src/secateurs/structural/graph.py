"""The dependency graph: every prunable axis class and the parameter slices it owns.

Built from a trace (:mod:`.trace`). A *group* is one atomic axis class that is not frozen and owns at
least one parameter slice: its indices are the units that are scored together and removed together.
Each member is one dimension of one parameter or buffer whose layout contains the class.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from secateurs.core.targets import io_dims, is_norm_like
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.structural.axes import Layout
from secateurs.structural.trace import STAT, Holder, Tracer, trace

Granularity = Literal["channel", "head"]


@dataclass(frozen=True)
class Member:
    """One dimension of one parameter (or buffer) that a group's units index into."""

    tensor: str
    holders: tuple[Holder, ...]
    dim: int
    layout: Layout

    @property
    def kind(self) -> str:
        return self.holders[0].kind

    @property
    def module_name(self) -> str:
        return self.holders[0].module_name

    @property
    def attr(self) -> str:
        return self.holders[0].attr


@dataclass
class Group:
    """Coupled units: removing unit ``i`` removes the matching slice of every member."""

    cls: int
    size: int
    kind: str
    members: list[Member] = field(default_factory=list)
    name: str = ""

    @property
    def modules(self) -> list[str]:
        return list(dict.fromkeys(m.module_name for m in self.members))

    def __repr__(self) -> str:
        return f"Group({self.name!r}, {self.kind}, size={self.size}, members={len(self.members)})"


class DependencyGraph:
    """Axes of a traced model, with the checks that make them safe to prune."""

    def __init__(self, model: nn.Module, tracer: Tracer, strict: bool = True) -> None:
        self.model = model
        self.named = dict(model.named_modules(remove_duplicate=False))
        self.macs = tracer.macs
        self.store = tracer.store
        self.tensors = tracer.tensors
        self.holders = {name: tuple(h) for name, h in tracer.holders.items()}
        self.labels = dict(tracer.labels_of)
        self.facts = tracer.facts
        self.stat_ops = tracer.stat_ops
        self.ops = tracer.ops
        self.calls = tracer.calls
        self.op_count = tracer.op_count
        self.warnings: list[str] = list(tracer.notes)
        missed = tracer.untraced_params()
        if missed:
            self.warnings.append(
                f"{len(missed)} parameters were not used by the example forward pass ({', '.join(missed[:4])}"
                f"{' ...' if len(missed) > 4 else ''}); they keep their sizes, and their modules may no longer fit "
                "the layers around them"
            )
        self._check_unsupported(tracer, strict)
        self._freeze_repeated()
        self._freeze_rebuilt_buffers()
        self.layouts = {name: [self.store.layout(a) for a in labels] for name, labels in self.labels.items()}
        self.members: dict[int, list[Member]] = defaultdict(list)
        for name, layouts in self.layouts.items():
            for dim, layout in enumerate(layouts):
                for cls in layout.classes():
                    if self.frozen(cls, prune_normalized=True):
                        continue
                    self.members[cls].append(Member(name, self.holders[name], dim, layout))
        self.head_classes = self._head_classes()

    def frozen(self, cls: int, prune_normalized: bool = False) -> bool:
        """Whether a class keeps its size; statistics over it do not pin it when ``prune_normalized``."""
        reasons = self.store.reasons(cls)
        if prune_normalized:
            reasons = [r for r in reasons if not r.startswith(STAT)]
        return bool(reasons)

    # -- checks ---------------------------------------------------------------------------------
    def _check_unsupported(self, tracer: Tracer, strict: bool) -> None:
        for described, module, axes in tracer.unsupported:
            blocked = sorted(
                {cls for a in axes for cls in self.store.atoms(a)
                 if all(r.startswith("unsupported operation") for r in self.store.reasons(cls))}
            )
            if not blocked:
                continue
            message = (
                f"unsupported operation {described} in module {module!r} touches prunable channels; "
                "secateurs will not guess how it couples them. Exclude the module that owns those channels "
                "(exclude=[...]), or trace with strict=False to keep everything it touches at full size"
            )
            if strict:
                raise UnsupportedOperationError(message)
            self.warnings.append(message)

    def _freeze_repeated(self) -> None:
        """A class appearing in two factors of one product would need two coordinates: keep it whole."""

        def visit(layout: Layout) -> None:
            if layout.kind == "prod":
                seen: set[int] = set()
                for part in layout.parts:
                    classes = part.classes()
                    for cls in classes & seen:
                        self.store.freeze(cls, "indexes two factors of one product")
                    seen |= classes
            for part in layout.parts:
                visit(part)

        for labels in self.labels.values():
            for axis in labels:
                visit(self.store.layout(axis))

    def _freeze_rebuilt_buffers(self) -> None:
        """Non-persistent buffers (rotary frequencies, position ids) are rebuilt from the configuration when a
        model is built, so a sliced copy could never be saved: their axes keep their size."""
        named = self.named
        for name, labels in self.labels.items():
            holders = self.holders[name]
            if holders[0].kind == "buffer" and all(
                h.attr in named[h.module_name]._non_persistent_buffers_set for h in holders
            ):
                for axis in labels:
                    self.store.freeze(axis, f"indexes non-persistent buffer {name}, rebuilt from the config at load time")

    def _head_classes(self) -> set[int]:
        heads: set[int] = set()
        for facts in self.facts.values():
            for kind, data in facts:
                axes = [data.get("q_heads"), data.get("kv_heads")] if kind == "attention" else (
                    [data["batch"]] if kind == "matmul" else [])
                for axis in axes:
                    if axis is not None:
                        heads |= {c for c in self.store.atoms(axis) if not self.frozen(c, prune_normalized=True)}
        return heads

    # -- groups ---------------------------------------------------------------------------------
    def groups(self, granularity: Granularity = "channel", exclude: Iterable[str | nn.Module] | None = None,
               prune_normalized: bool = False) -> list[Group]:
        """The prunable groups for a granularity; ``exclude`` modules (names or globs, with their submodules, or
        module objects) keep every dimension. With
        ``prune_normalized`` dimensions that only feed statistics (layer norms, means, softmax, the default
        attention scale) are pruned too; those statistics are then taken over the kept channels."""
        if granularity not in ("channel", "head"):
            raise PruningError(f"granularity must be 'channel' or 'head' here (got {granularity!r}); depth pruning uses granularity='layer'")
        blocked = self._blocked(exclude)
        eligible = set()
        for cls, members in self.members.items():
            if cls in blocked or not any(m.kind == "param" for m in members):
                continue
            if self.frozen(cls, prune_normalized):
                continue
            is_head = cls in self.head_classes
            if is_head == (granularity == "head") or (is_head and self._in_normalised_stream(members)):
                eligible.add(cls)
        eligible -= self._inner_factors(eligible)
        groups = [self._group(cls, "head" if cls in self.head_classes else "channel") for cls in eligible]
        position = {name: i for i, name in enumerate(self.tensors)}
        return sorted(groups, key=lambda g: (min(position[m.tensor] for m in g.members), g.name))

    def _blocked(self, exclude: Iterable[str | nn.Module] | None) -> set[int]:
        if not exclude:
            return set()
        exclude = list(exclude)
        patterns = [p for p in exclude if isinstance(p, str)]
        named = self.named
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in named)]
        if unknown:
            raise PruningError(f"exclude patterns {unknown} match no module; module names look like {list(named)[1:4]}")
        inside = {id(sub) for m in exclude if isinstance(m, nn.Module) for sub in m.modules()}
        blocked: set[int] = set()
        for name, holders in self.holders.items():
            hit = any(
                any(fnmatch.fnmatchcase(h.module_name, p) or fnmatch.fnmatchcase(h.module_name, p + ".*") for p in patterns)
                or id(named.get(h.module_name)) in inside
                for h in holders
            )
            if hit and name in self.layouts:
                for layout in self.layouts[name]:
                    blocked |= layout.classes()
        return blocked

    def _in_normalised_stream(self, members: list[Member]) -> bool:
        """Heads tied to a residual stream under a norm (torchvision Swin and ``nn.MultiheadAttention``
        reshape with the input width): pruning that stream's channels means removing whole heads."""
        return any(is_norm_like(self.named[m.module_name]) for m in members if m.kind == "param")

    def _inner_factors(self, eligible: set[int]) -> set[int]:
        """Classes left whole because they share a product with a class that is pruned instead: cutting
        both factors of ``groups x width`` by 50% would remove three quarters of the positions. Preferred:
        classes that make up a whole parameter dimension by themselves (a grouped convolution's width per
        group, which also shrinks its input slices), then those owning more parameter slices (the kv heads
        of grouped-query attention, which also shrink the key and value projections)."""
        conflicts: dict[int, set[int]] = {c: set() for c in eligible}
        whole = dict.fromkeys(eligible, 0)

        def visit(layout: Layout) -> None:
            if layout.kind == "prod":
                together = layout.classes() & eligible
                for c in together:
                    conflicts[c] |= together - {c}
            for part in layout.parts:
                visit(part)

        for layouts in self.layouts.values():
            for layout in layouts:
                if layout.kind == "atom" and layout.cls in whole:
                    whole[layout.cls] += 1
                visit(layout)
        owned = {c: sum(m.kind == "param" for m in self.members[c]) for c in eligible}
        chosen: set[int] = set()
        for cls in sorted(eligible, key=lambda c: (-whole[c], -owned[c], c)):
            if not conflicts[cls] & chosen:
                chosen.add(cls)
        return eligible - chosen

    def _group(self, cls: int, granularity: str) -> Group:
        members = self.members[cls]
        group = Group(cls, self.store.size(cls), granularity, list(members))
        group.name = self._name(group)
        return group

    def _name(self, group: Group) -> str:
        """The producer when there is one (a weight's output dimension), else the first parameter."""
        named = self.named
        for member in group.members:
            module = named.get(member.module_name)
            tensor = self.tensors[member.tensor]
            if member.kind == "param" and tensor.dim() >= 2 and module is not None and io_dims(module, tensor)[0] == member.dim:
                return f"{member.tensor}[{member.dim}]"
        params = [m for m in group.members if m.kind == "param"]
        member = (params or group.members)[0]
        return f"{member.tensor}[{member.dim}]"

    # -- inspection -----------------------------------------------------------------------------
    def why_frozen(self, tensor: str) -> dict[int, list[str]]:
        """For each dimension of a parameter or buffer, why its classes keep their size (empty = prunable)."""
        if tensor not in self.layouts:
            raise PruningError(f"{tensor!r} was not used in the traced forward pass (known: {list(self.layouts)[:5]} ...)")
        result = {}
        for dim, layout in enumerate(self.layouts[tensor]):
            reasons: list[str] = []
            for cls in sorted(layout.classes()):
                reasons.extend(r for r in self.store.reasons(cls) if r not in reasons)
            result[dim] = reasons
        return result

    def summary(self, granularity: Granularity = "channel", prune_normalized: bool = False) -> str:
        groups = self.groups(granularity, prune_normalized=prune_normalized)
        lines = [f"{len(groups)} {granularity} groups over {len(self.labels)} traced tensors ({self.op_count} ops)"]
        for g in groups:
            lines.append(f"  {g.name:<50} {g.size:>6}  members: {', '.join(f'{m.tensor}[{m.dim}]' for m in g.members[:6])}"
                         + (" ..." if len(g.members) > 6 else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"DependencyGraph({len(self.labels)} tensors, {len(self.members)} prunable classes)"


def build_graph(model: nn.Module, example_inputs: Any, *, strict: bool = True) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and return its dependency graph.

    ``example_inputs`` is a tensor, a tuple of positional arguments, or a dict of keyword arguments.
    With ``strict=True`` an operation secateurs has no rule for raises
    :class:`~secateurs.errors.UnsupportedOperationError` when it touches prunable channels.
    """
    if not isinstance(model, nn.Module):
        raise PruningError(f"build_graph needs an nn.Module, got {type(model).__name__}")
    with torch.no_grad():
        tracer = trace(model, example_inputs)
    return DependencyGraph(model, tracer, strict=strict)
