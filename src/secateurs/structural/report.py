"""What a shrink did: sizes before and after, the verification result, and the structure step."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GroupChange:
    name: str
    kind: str
    before: int
    after: int
    members: int


@dataclass
class Verification:
    """The comparison of the shrunk model with the masked one, at the activations of the cut layers and
    at the outputs. ``verified`` is None when not checked, False when no compared value carried a signal
    (random-init outputs that vanish): then nothing was proven and ``verification`` says why."""

    verified: bool | None = None
    verification: str = "not checked (verify=False)"
    points_checked: int = 0
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    tolerance: float | None = None  # relative to each point's largest value (absolute when atol was given)


@dataclass
class ShrinkReport:
    """What :func:`shrink` did, and the proof that it kept the masked model's function (the fields of
    :class:`Verification`, from ``verified`` to ``tolerance``)."""

    granularity: str
    method: str
    scope: str
    amount: float | int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    verified: bool | None = None
    verification: str = "not checked (verify=False)"
    points_checked: int = 0
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    tolerance: float | None = None
    seconds: float = 0.0
    groups: list[GroupChange] = field(default_factory=list)
    removed_layers: list[str] = field(default_factory=list)
    patched_modules: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    structure: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("structure")
        data.update(params_ratio=self.params_ratio, macs_ratio=self.macs_ratio)
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        pruned = [g for g in self.groups if g.after < g.before]
        lines = [
            f"shrink ({self.granularity}, {self.method}, {self.scope}, amount={self.amount}): "
            f"{len(pruned)}/{len(self.groups)} groups cut" + (f", {len(self.removed_layers)} layers removed" if self.removed_layers else ""),
            f"  params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.3f}x)",
            f"  MACs   {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.3f}x)",
        ]
        lines.append(f"  {self.verification}")
        for warning in self.warnings:
            lines.append(f"  warning: {warning}")
        return "\n".join(lines)
