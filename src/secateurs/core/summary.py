"""Where the zeros are: per-layer sparsity of a model, as a table, a dict or JSON.

Counts come from the weights themselves (exact zeros), so they are right for masked, finalized and
loaded models alike. Structured sparsity shows as the fraction of all-zero output units (rows, filters)
and input units (columns, input channels).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.core.masks import get_mask
from secateurs.core.targets import io_dims


@dataclass
class SummaryRow:
    name: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    zero_rows: float
    zero_cols: float
    masked: bool

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass
class Summary:
    rows: list[SummaryRow] = field(default_factory=list)
    other_params: int = 0
    other_nonzeros: int = 0

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows) + self.other_params

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.rows) + self.other_nonzeros

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def row(self, name: str) -> SummaryRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [{**asdict(r), "sparsity": r.sparsity} for r in self.rows],
            "other": {"params": self.other_params, "nonzeros": self.other_nonzeros},
            "total": {"params": self.params, "nonzeros": self.nonzeros, "sparsity": self.sparsity},
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [22])
        header = f"{'layer':<{width}}  {'shape':<18}  {'params':>11}  {'nonzero':>11}  {'sparsity':>8}  {'0-rows':>6}  {'0-cols':>6}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            shape = "x".join(map(str, r.shape))
            mark = "*" if r.masked else " "
            lines.append(
                f"{r.name:<{width}}  {shape:<18}  {r.params:>11,}  {r.nonzeros:>11,}  {r.sparsity:>7.1%}{mark}  "
                f"{r.zero_rows:>6.1%}  {r.zero_cols:>6.1%}"
            )
        if self.other_params:
            other_sparsity = 1 - self.other_nonzeros / self.other_params
            lines.append(
                f"{'(biases, norms, 1-D)':<{width}}  {'':<18}  {self.other_params:>11,}  {self.other_nonzeros:>11,}  {other_sparsity:>7.1%} "
            )
        lines.append("-" * len(header))
        lines.append(f"{'total':<{width}}  {'':<18}  {self.params:>11,}  {self.nonzeros:>11,}  {self.sparsity:>7.1%} ")
        lines.append("* = masked (pruning active); 0-rows/0-cols = all-zero output/input units")
        return "\n".join(lines)


def count_params(model: nn.Module) -> int:
    """Number of parameters; tied parameters count once (``parameters()`` yields each tensor once)."""
    return sum(p.numel() for p in model.parameters())


def _zero_fraction(nonzero: torch.Tensor, dim: int) -> float:
    others = tuple(d for d in range(nonzero.dim()) if d != dim)
    alive = nonzero.any(dim=others) if others else nonzero
    return 1.0 - float(alive.sum()) / alive.numel() if alive.numel() else 0.0


def summary(model: nn.Module) -> Summary:
    """Per-layer rows for every weight of 2+ dims; other parameters are totalled in one line."""
    result = Summary()
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            data = param.detach()
            nonzeros = int(torch.count_nonzero(data))
            if data.dim() < 2:
                result.other_params += data.numel()
                result.other_nonzeros += nonzeros
                continue
            nonzero = data != 0
            out_dim, in_dim = io_dims(module, data)
            result.rows.append(
                SummaryRow(
                    name=f"{module_name}.{pname}" if module_name else pname,
                    shape=tuple(data.shape),
                    params=data.numel(),
                    nonzeros=nonzeros,
                    zero_rows=_zero_fraction(nonzero, out_dim),
                    zero_cols=_zero_fraction(nonzero, in_dim),
                    masked=get_mask(module, pname) is not None,
                )
            )
    return result
