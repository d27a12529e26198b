"""What shape a removal takes: single weights, whole slices along a dimension, N of every M, or tiles.

A pattern defines the *groups* that are kept or removed together. The engine scores groups with
:meth:`Pattern.group_scores`, chooses which to drop, and turns group decisions back into a per-weight
keep-mask with :meth:`Pattern.expand`. N:M decides within each block of M weights, so it has its own
:meth:`NM.keep_mask` and never ranks across tensors.
"""

from __future__ import annotations

import re

import torch

from secateurs.core.criteria import Criterion
from secateurs.core.targets import Target
from secateurs.errors import PruningError


class Pattern:
    """Base class. Subclasses say how weights form groups."""

    #: Whether groups of different tensors can be ranked against each other (global scope).
    supports_global = True

    def validate(self, target: Target) -> None:
        """Raise :class:`PruningError` when the pattern cannot apply to ``target``."""

    def num_groups(self, target: Target) -> int:
        raise NotImplementedError

    def group_scores(self, scores: torch.Tensor, target: Target, criterion: Criterion) -> torch.Tensor:
        raise NotImplementedError

    def group_keep(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Which groups still hold at least one kept weight."""
        raise NotImplementedError

    def expand(self, group_keep: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Per-weight keep-mask: the old ``keep`` with the dropped groups removed."""
        raise NotImplementedError


class Unstructured(Pattern):
    """Each weight is its own group."""

    def num_groups(self, target: Target) -> int:
        return target.param.numel()

    def group_scores(self, scores: torch.Tensor, target: Target, criterion: Criterion) -> torch.Tensor:
        return scores

    def group_keep(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        return keep

    def expand(self, group_keep: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        return group_keep & keep

    def __repr__(self) -> str:
        return "Unstructured()"


class Structured(Pattern):
    """Whole slices along ``dim``: ``"out"`` removes output neurons/filters (rows), ``"in"`` input
    channels (columns); an integer names any dimension."""

    def __init__(self, dim: int | str = "out") -> None:
        self.dim = dim

    def validate(self, target: Target) -> None:
        if target.param.dim() < 2:
            raise PruningError(
                f"structured pruning needs a tensor of at least 2 dims; {target.name} has shape "
                f"{tuple(target.param.shape)} (prune it unstructured, or leave it out)"
            )
        target.dim(self.dim)

    def _other_dims(self, target: Target) -> tuple[int, tuple[int, ...]]:
        dim = target.dim(self.dim)
        return dim, tuple(d for d in range(target.param.dim()) if d != dim)

    def num_groups(self, target: Target) -> int:
        return target.param.shape[target.dim(self.dim)]

    def group_scores(self, scores: torch.Tensor, target: Target, criterion: Criterion) -> torch.Tensor:
        _, others = self._other_dims(target)
        return criterion.reduce(scores, others)

    def group_keep(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        _, others = self._other_dims(target)
        return keep.any(dim=others) if others else keep

    def expand(self, group_keep: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        dim = target.dim(self.dim)
        view = [1] * keep.dim()
        view[dim] = -1
        return keep & group_keep.view(view)

    def __repr__(self) -> str:
        return f"Structured(dim={self.dim!r})"


class NM(Pattern):
    """Keep at most ``n`` of every ``m`` consecutive weights along the input dimension (2:4, 4:8, ...).

    For convolutions the blocks run along input channels at each (output, kernel position), the layout
    sparse tensor cores expect. The sparsity is fixed at ``1 - n/m``; it is decided block by block.
    """

    supports_global = False

    def __init__(self, n: int, m: int, dim: int | str = "in") -> None:
        if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
            raise PruningError(f"N:M needs integers, got {n!r}:{m!r}")
        if not 0 <= n < m:
            raise PruningError(f"N:M needs 0 <= N < M, got {n}:{m} (for example 2:4)")
        self.n, self.m, self.dim = n, m, dim

    def validate(self, target: Target) -> None:
        param = target.param
        dim = target.dim(self.dim) if param.dim() >= 2 or isinstance(self.dim, int) else 0
        size = param.shape[dim]
        if size % self.m:
            raise PruningError(
                f"{target.name}: dimension {dim} has {size} weights, not a multiple of M={self.m}; "
                f"exclude it or choose M dividing {size}"
            )

    def num_groups(self, target: Target) -> int:
        return target.param.numel()

    def keep_mask(self, scores: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Keep the ``n`` highest-scoring weights of each block; weights already pruned go first.

        Ties are broken towards pruning the earlier weight of a block (stable sort).
        """
        dim = target.dim(self.dim) if scores.dim() >= 2 else 0
        moved_scores = scores.masked_fill(~keep, float("-inf")).movedim(dim, -1)
        blocks = moved_scores.reshape(*moved_scores.shape[:-1], -1, self.m)
        order = torch.sort(blocks, dim=-1, stable=True).indices
        block_keep = torch.ones_like(blocks, dtype=torch.bool)
        block_keep.scatter_(-1, order[..., : self.m - self.n], False)
        return block_keep.reshape(moved_scores.shape).movedim(-1, dim) & keep

    def __repr__(self) -> str:
        return f"NM({self.n}, {self.m})"


class Block(Pattern):
    """Whole ``rows``×``cols`` tiles of a 2-D weight, rows along the outputs and columns along the inputs
    (a Linear's ``[out, in]``; Hugging Face's ``Conv1D`` is read transposed, so tiles mean the same).

    Tiles are the unit block-sparse kernels (torch's BSR layout) skip, so whole zero tiles pay at run time
    where single zeros do not. A tile's score is the criterion's reduction of its weights' scores (the sum
    for magnitude). Convolutions are refused: tiles across kernel positions match no sparse kernel, so
    prune them by channel instead. Amounts count tiles.
    """

    def __init__(self, rows: int, cols: int | None = None) -> None:
        cols = rows if cols is None else cols
        for size in (rows, cols):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise PruningError(f"block sizes must be positive integers, got {rows!r}x{cols!r} (for example 'block:32')")
        self.rows, self.cols = rows, cols

    def validate(self, target: Target) -> None:
        shape = tuple(target.param.shape)
        if len(shape) != 2:
            raise PruningError(
                f"{target.name} has shape {shape}: block pruning tiles 2-D weights (Linear, Conv1D); "
                "prune convolutions by 'channel' or 'unstructured', or exclude them"
            )
        out_size, in_size = self._matrix_shape(target)
        sides = (("out", out_size, self.rows), ("in", in_size, self.cols))
        misfits = [f"{side} {size} is not a multiple of {block}" for side, size, block in sides if size % block]
        if misfits:
            raise PruningError(
                f"{target.name} ({out_size} out x {in_size} in) does not split into {self.rows}x{self.cols} blocks: "
                f"{' and '.join(misfits)}; blocks that fit: rows {_fitting_sizes(out_size)}, "
                f"cols {_fitting_sizes(in_size)}, or exclude it"
            )

    def num_groups(self, target: Target) -> int:
        out_size, in_size = self._matrix_shape(target)
        return (out_size // self.rows) * (in_size // self.cols)

    def group_scores(self, scores: torch.Tensor, target: Target, criterion: Criterion) -> torch.Tensor:
        return criterion.reduce(self._tiles(scores, target), (1, 3))

    def group_keep(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        return self._tiles(keep, target).any(dim=3).any(dim=1)

    def expand(self, group_keep: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        tile_rows, tile_cols = group_keep.shape
        tiles = group_keep.view(tile_rows, 1, tile_cols, 1).expand(tile_rows, self.rows, tile_cols, self.cols)
        matrix = tiles.reshape(tile_rows * self.rows, tile_cols * self.cols)
        return keep & (matrix.t() if self._transposed(target) else matrix)

    def _transposed(self, target: Target) -> bool:
        return target.dim("out") == 1

    def _matrix_shape(self, target: Target) -> tuple[int, int]:
        shape = target.param.shape
        return (shape[1], shape[0]) if self._transposed(target) else (shape[0], shape[1])

    def _tiles(self, values: torch.Tensor, target: Target) -> torch.Tensor:
        """``values`` as ``[tile row, row in tile, tile column, column in tile]`` of the ``[out, in]`` matrix."""
        matrix = values.t() if self._transposed(target) else values
        out_size, in_size = matrix.shape
        return matrix.reshape(out_size // self.rows, self.rows, in_size // self.cols, self.cols)

    def __repr__(self) -> str:
        return f"Block({self.rows}, {self.cols})"


def _fitting_sizes(size: int) -> str:
    """The power-of-two block sizes up to 64 that divide ``size``."""
    return ", ".join(str(b) for b in (1, 2, 4, 8, 16, 32, 64) if size % b == 0)


_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK_RE = re.compile(r"^block\s*:\s*(\d+)\s*(?:x\s*(\d+))?$")
_ALIASES = {
    "unstructured": lambda: Unstructured(),
    "element": lambda: Unstructured(),
    "structured": lambda: Structured("out"),
    "out": lambda: Structured("out"),
    "rows": lambda: Structured("out"),
    "neuron": lambda: Structured("out"),
    "neurons": lambda: Structured("out"),
    "filter": lambda: Structured("out"),
    "filters": lambda: Structured("out"),
    "channel": lambda: Structured("out"),
    "channels": lambda: Structured("out"),
    "in": lambda: Structured("in"),
    "columns": lambda: Structured("in"),
    "input": lambda: Structured("in"),
}


def parse_pattern(spec: str | Pattern) -> Pattern:
    """A pattern from a spec: ``"unstructured"``, ``"2:4"``, ``"channel"``/``"out"``, ``"in"``, ``"structured:2"``,
    ``"block:32"`` (32×32 tiles) or ``"block:16x32"`` (16 output rows by 32 input columns)."""
    if isinstance(spec, Pattern):
        return spec
    if not isinstance(spec, str):
        raise PruningError(f"pattern must be a string or Pattern, got {type(spec).__name__}")
    match = _NM_RE.match(spec)
    if match:
        return NM(int(match.group(1)), int(match.group(2)))
    key = spec.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]()
    block = _BLOCK_RE.match(key)
    if block:
        return Block(int(block.group(1)), int(block.group(2) or block.group(1)))
    if key.startswith("structured:"):
        dim = key.split(":", 1)[1]
        return Structured(int(dim) if dim.lstrip("-").isdigit() else dim)
    raise PruningError(
        f"unknown pattern {spec!r}; use 'unstructured', an N:M ratio such as '2:4', "
        "'channel'/'out' (rows), 'in' (columns), 'structured:DIM' or 'block:32' / 'block:16x32' (tiles)"
    )
