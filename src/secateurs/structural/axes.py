"""Channel spaces: which positions of which tensor dimensions must be removed together.

Every dimension of every tensor seen while tracing carries an *axis*: an abstract index set of the
dimension's size. Axes are merged (union-find) when an operation ties two dimensions position by
position (residual add, a Linear's input meeting the activation it reads, ...), and *refined* when an
operation reshapes or cuts them:

* ``prod``: the dimension is a row-major product of smaller axes (a view ``[768] -> [12, 64]`` makes
  ``heads x head_dim``; flattening ``[C, H, W]`` makes ``C x H x W``);
* ``cat``: the dimension is a concatenation of smaller axes (``torch.cat``, ``split``, slicing).

After tracing, every dimension resolves to a tree of *atomic* axis classes. Removing index ``i`` of an
atomic class removes, from every dimension whose tree contains it, the positions whose coordinate on
that class is ``i``. A product therefore expresses structure exactly: removing a head removes a whole
row of ``heads x head_dim``, removing a head_dim index removes it from every head, and the GQA
query heads ``kv_heads x group`` can lose whole kv groups or the same member of every group.

A class is *frozen* (never pruned) when something pins its size or its positions: a model input or
output, a reduction over it, a data-dependent index, an unknown operation. Freezing carries a reason so
errors and reports can say why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PROD, CAT = "prod", "cat"


@dataclass(frozen=True)
class Layout:
    """A dimension resolved into atomic classes: ``kind`` is ``"atom"``, ``"prod"`` or ``"cat"``."""

    kind: str
    size: int
    cls: int = -1
    parts: tuple[Layout, ...] = ()

    def classes(self) -> set[int]:
        if self.kind == "atom":
            return {self.cls}
        found: set[int] = set()
        for part in self.parts:
            found |= part.classes()
        return found

    def kept_positions(self, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Ascending positions that survive when each class keeps ``keep[cls]`` (all when absent)."""
        if self.kind == "atom":
            return keep.get(self.cls, np.arange(self.size))
        if self.kind == "cat":
            chunks, offset = [], 0
            for part in self.parts:
                chunks.append(part.kept_positions(keep) + offset)
                offset += part.size
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        positions = np.zeros(1, dtype=np.int64)
        for part in self.parts:
            positions = (positions[:, None] * part.size + part.kept_positions(keep)[None, :]).reshape(-1)
        return positions

    def new_size(self, keep: dict[int, np.ndarray]) -> int:
        if self.kind == "atom":
            return len(keep[self.cls]) if self.cls in keep else self.size
        sizes = [part.new_size(keep) for part in self.parts]
        return sum(sizes) if self.kind == "cat" else math.prod(sizes)

    def coordinates(self, cls: int) -> np.ndarray:
        """For every position, its index on class ``cls`` (-1 where the position is outside it)."""
        if self.kind == "atom":
            return np.arange(self.size) if self.cls == cls else np.full(self.size, -1)
        if self.kind == "cat":
            return np.concatenate([part.coordinates(cls) for part in self.parts])
        coords = np.full(1, -1)
        for part in self.parts:
            inner = part.coordinates(cls)
            coords = np.maximum(np.repeat(coords, part.size), np.tile(inner, len(coords)))
        return coords


class AxisStore:
    """Union-find over axes, with product/concatenation refinements and freezing."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._split: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._reasons: dict[int, list[str]] = {}

    # -- basics ---------------------------------------------------------------------------------
    def new(self, size: int, reason: str | None = None) -> int:
        """A fresh axis; ``reason`` freezes it. Axes of size 1 are always frozen (nothing to remove)."""
        axis = len(self._parent)
        self._parent.append(axis)
        self._size.append(int(size))
        if reason is None and size <= 1:
            reason = "single position"
        if reason is not None:
            self._reasons[axis] = [reason]
        return axis

    def size(self, axis: int) -> int:
        return self._size[axis]

    def find(self, axis: int) -> int:
        root = axis
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[axis] != root:
            self._parent[axis], axis = root, self._parent[axis]
        return root

    def is_frozen(self, axis: int) -> bool:
        return bool(self._reasons.get(self.find(axis)))

    def reasons(self, axis: int) -> list[str]:
        return list(self._reasons.get(self.find(axis), ()))

    def freeze(self, axis: int, reason: str) -> None:
        """Freeze an axis and everything it is made of."""
        root = self.find(axis)
        reasons = self._reasons.setdefault(root, [])
        if reason not in reasons:
            reasons.append(reason)
        split = self._split.get(root)
        if split:
            for child in split[1]:
                self.freeze(child, reason)

    # -- composites -----------------------------------------------------------------------------
    def make(self, kind: str, parts: Sequence[int]) -> int:
        """An axis defined as the product or concatenation of existing axes (trivial parts dropped)."""
        keep_if = (lambda a: self._size[a] > 1) if kind == PROD else (lambda a: self._size[a] > 0)
        parts = [p for p in parts if keep_if(p)]
        if len(parts) == 1:
            return parts[0]
        size = math.prod(self._size[p] for p in parts) if kind == PROD else sum(self._size[p] for p in parts)
        if not parts:
            return self.new(1 if kind == PROD else 0, "single position")
        axis = len(self._parent)
        self._parent.append(axis)
        self._size.append(size)
        self._split[axis] = (kind, tuple(parts))
        return axis

    def refine(self, axis: int, kind: str, sizes: Sequence[int]) -> list[int]:
        """Cut ``axis`` into parts of the given sizes; returns one axis per size (trivial ones included)."""
        sizes = [int(s) for s in sizes]
        total = math.prod(sizes) if kind == PROD else sum(sizes)
        if total != self._size[axis]:
            raise ValueError(f"cannot cut an axis of size {self._size[axis]} into {kind} {sizes}")
        parts = [self.new(s) for s in sizes]
        if len([s for s in sizes if (s > 1 if kind == PROD else s > 0)]) <= 1:
            # One real part: it *is* the axis; the trivial ones stand alone.
            for part, s in zip(parts, sizes):
                if (s > 1 if kind == PROD else s > 0):
                    self.unify(part, axis)
            return parts
        self.unify(self.make(kind, parts), axis)
        return parts

    # -- unification ----------------------------------------------------------------------------
    def unify(self, a: int, b: int) -> None:
        """Tie two axes position by position (they must have the same size)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] != self._size[rb]:
            raise ValueError(f"cannot tie axes of sizes {self._size[ra]} and {self._size[rb]}")
        split_a, split_b = self._split.pop(ra, None), self._split.pop(rb, None)
        reasons_a, reasons_b = self._reasons.pop(ra, []), self._reasons.pop(rb, [])
        reasons = reasons_a + [r for r in reasons_b if r not in reasons_a]
        self._parent[rb] = ra
        if split_a is None:
            split_a, split_b = split_b, None
        if split_a is not None:
            self._split[ra] = split_a
        if split_b is not None:
            self._align(split_a, split_b, ra)
        for reason in reasons:
            self.freeze(ra, reason)

    def _flattened(self, kind: str, parts: Iterable[int]) -> list[int]:
        flat: list[int] = []
        for part in parts:
            split = self._split.get(self.find(part))
            if split and split[0] == kind:
                flat.extend(self._flattened(kind, split[1]))
            else:
                flat.append(self.find(part))
        return flat

    def _align(self, split_a: tuple[str, tuple[int, ...]], split_b: tuple[str, tuple[int, ...]], root: int) -> None:
        kind_a, kind_b = split_a[0], split_b[0]
        a, b = self._flattened(kind_a, split_a[1]), self._flattened(kind_b, split_b[1])
        if kind_a == kind_b:
            pieces_a, pieces_b = self._common(kind_a, a, b)
            if pieces_a is None:
                self._incompatible(a + b, f"{kind_a} structures that do not line up")
                return
            for x, y in zip(pieces_a, pieces_b):
                self.unify(x, y)
            return
        prod, cat = (a, b) if kind_a == PROD else (b, a)
        self._align_prod_cat(prod, cat)

    def _common(self, kind: str, a: list[int], b: list[int]) -> tuple[list[int] | None, list[int] | None]:
        """Refine two products (or two concatenations) of equal size to the same sequence of sizes."""
        cuts_a, cuts_b = self._cuts(kind, a), self._cuts(kind, b)
        cuts = sorted(set(cuts_a) | set(cuts_b))
        if kind == PROD and any(hi % lo for lo, hi in zip(cuts, cuts[1:])):
            return None, None
        return self._cut(kind, a, cuts), self._cut(kind, b, cuts)

    def _cuts(self, kind: str, parts: list[int]) -> list[int]:
        """Boundaries: suffix products for a product (strides), prefix sums for a concatenation."""
        sizes = [self._size[p] for p in parts]
        if kind == PROD:
            cuts, acc = [1], 1
            for size in reversed(sizes):
                acc *= size
                cuts.append(acc)
            return cuts
        return [0, *np.cumsum(sizes).tolist()]

    def _cut(self, kind: str, parts: list[int], cuts: list[int]) -> list[int]:
        out: list[int] = []
        if kind == PROD:
            stride = math.prod(self._size[p] for p in parts)
            for part in parts:
                hi = stride
                stride //= self._size[part]
                inner = [c for c in cuts if stride <= c <= hi]
                sizes = [y // x for x, y in zip(inner, inner[1:])][::-1]  # outermost first
                out.extend(self.refine(part, PROD, sizes) if len(sizes) > 1 else [part])
            return out
        start = 0
        for part in parts:
            end = start + self._size[part]
            inner = [c for c in cuts if start <= c <= end]
            sizes = [y - x for x, y in zip(inner, inner[1:])]
            out.extend(self.refine(part, CAT, sizes) if len(sizes) > 1 else [part])
            start = end
        return out

    def _align_prod_cat(self, prod: list[int], cat: list[int]) -> None:
        """``prod(outer, *inner)`` against ``cat(...)``: each piece must hold whole rows of the outer factor."""
        outer, inner = prod[0], prod[1:]
        stride = math.prod(self._size[p] for p in inner)
        bounds = self._cuts(CAT, cat)
        if any(c % stride for c in bounds):
            self._incompatible(prod + cat, "a concatenation that cuts through a product")
            return
        rows = [(hi - lo) // stride for lo, hi in zip(bounds, bounds[1:])]
        pieces = self.refine(outer, CAT, rows) if len(rows) > 1 else [outer]
        for piece, part in zip(pieces, cat):
            self.unify(part, self.make(PROD, [piece, *inner]))

    def _incompatible(self, parts: list[int], why: str) -> None:
        for part in parts:
            self.freeze(part, f"tied through {why}")

    # -- resolution -----------------------------------------------------------------------------
    def layout(self, axis: int) -> Layout:
        root = self.find(axis)
        split = self._split.get(root)
        if split is None:
            return Layout("atom", self._size[root], cls=root)
        kind, parts = split
        return Layout(kind, self._size[root], parts=tuple(self.layout(p) for p in self._flattened(kind, parts)))

    def atoms(self, axis: int) -> set[int]:
        return self.layout(axis).classes()
