"""The result of a sensitivity scan: one curve per unit, the dense value, and what an allocator needs.

Every curve holds, per amount scanned, the metric, how many elements and parameters were removed, and
(:meth:`SensitivityResult.drop`) how much worse the metric got than dense, in the metric's units, positive
= worse whichever way the metric points. Results round-trip through JSON (:meth:`~SensitivityResult.to_json`,
:meth:`~SensitivityResult.from_json`); CSV and plots are written atomically too.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secateurs.analysis.metrics import EvaluationError
from secateurs.analysis.plots import plot_sensitivity
from secateurs.core.amounts import Amount
from secateurs.errors import PruningError
from secateurs.storage import atomic_file

FORMAT = "secateurs.sensitivity"
FORMAT_VERSION = 1
CSV_COLUMNS = ("unit", "kind", "amount", "value", "drop", "removed", "params_removed", "unit_params", "dense")


@dataclass
class UnitCurve:
    """One unit's curve: the metric after pruning it alone at each amount."""

    name: str
    kind: str
    size: int
    params: int
    amounts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    params_removed: list[int] = field(default_factory=list)

    def add(self, amount: float, value: float, removed: int, params_removed: int) -> None:
        self.amounts.append(amount)
        self.values.append(value)
        self.removed.append(removed)
        self.params_removed.append(params_removed)


@dataclass
class SensitivityResult:
    """Curves of a scan (see the module docstring). ``unit`` is the metric's unit (``%``, ``x100`` or empty)."""

    metric: str
    higher_is_better: bool
    unit: str
    granularity: str
    method: str
    dense: float
    amounts: list[float]
    curves: list[UnitCurve]
    model_params: int
    evaluations: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    # ---- reading ----------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.unit})" if self.unit else self.metric

    @property
    def units(self) -> list[str]:
        return [curve.name for curve in self.curves]

    def curve(self, unit: str) -> UnitCurve:
        for curve in self.curves:
            if curve.name == unit:
                return curve
        raise PruningError(f"no unit {unit!r} in this result; units look like {', '.join(self.units[:4])}")

    def _drop(self, value: float) -> float:
        if math.isnan(value):
            return math.inf
        return self.dense - value if self.higher_is_better else value - self.dense

    def drops(self, unit: str) -> list[float]:
        """How much worse than dense the metric is at each amount (positive = worse; NaN counts as infinite)."""
        return [self._drop(value) for value in self.curve(unit).values]

    def drop(self, unit: str, amount: float) -> float:
        curve = self.curve(unit)
        for scanned, value in zip(curve.amounts, curve.values):
            if math.isclose(scanned, amount, abs_tol=1e-9):
                return self._drop(value)
        raise PruningError(f"amount {amount} was not scanned; scanned: {', '.join(f'{a:g}' for a in curve.amounts)}")

    def sensitivity_of(self, unit: str, at: float | None = None) -> float:
        """The drop at amount ``at``, or (default) the mean drop over every amount scanned."""
        if at is not None:
            return self.drop(unit, at)
        drops = self.drops(unit)
        return sum(drops) / len(drops)

    def most_sensitive(self, k: int | None = None, *, at: float | None = None) -> list[str]:
        """Unit names, most fragile first (by :meth:`sensitivity_of`); the first ``k`` when given."""
        ranked = sorted(self.curves, key=lambda c: -self.sensitivity_of(c.name, at))
        return [curve.name for curve in ranked[:k]]

    def fragile_units(self, max_drop: float, *, at: float | None = None) -> list[str]:
        """Units whose drop exceeds ``max_drop`` (at amount ``at``, or on average over the scan), most fragile first."""
        return [name for name in self.most_sensitive(at=at) if self.sensitivity_of(name, at) > max_drop]

    def max_amounts(self, max_drop: float) -> dict[str, float]:
        """Per unit, the largest amount scanned up to which every drop stays within ``max_drop`` (0.0 if none):
        the most each unit takes on its own, the starting point of an allocation."""
        result = {}
        for curve in self.curves:
            best = 0.0
            for amount, drop in zip(curve.amounts, self.drops(curve.name)):
                if drop > max_drop:
                    break
                best = amount
            result[curve.name] = best
        return result

    def per_layer(self, amounts: Mapping[str, Amount]) -> dict[str, Amount]:
        """``{unit: amount}`` as the ``per_layer`` patterns that ``prune``, ``prune_with_data`` (parameters) and
        ``shrink`` (groups) take: names with glob characters become exact ``re:`` patterns."""
        if self.granularity == "layer":
            raise PruningError(
                "depth pruning takes amounts per container, not per block: keep fragile blocks with shrink(..., "
                "exclude=[...]) instead"
            )
        known = set(self.units)
        unknown = [name for name in amounts if name not in known]
        if unknown:
            raise PruningError(f"units {unknown[:4]} are not in this result; units look like {', '.join(self.units[:4])}")
        return {exact_pattern(name): amount for name, amount in amounts.items()}

    # ---- files ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT, "version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise EvaluationError(f"not a sensitivity result of format {FORMAT} version {FORMAT_VERSION}")
        fields = {key: value for key, value in data.items() if key not in ("format", "version")}
        fields["curves"] = [UnitCurve(**curve) for curve in fields["curves"]]
        return cls(**fields)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The result as JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            _write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> SensitivityResult:
        """A result from a JSON file written by :meth:`to_json` (or from the JSON text itself)."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per unit and amount (columns :data:`CSV_COLUMNS`), written atomically."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for curve in self.curves:
            for i, (amount, drop) in enumerate(zip(curve.amounts, self.drops(curve.name))):
                writer.writerow([curve.name, curve.kind, amount, curve.values[i], drop, curve.removed[i],
                                 curve.params_removed[i], curve.params, self.dense])
        _write_text(path, buffer.getvalue())

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """The curves as a PNG or SVG figure (by the file's suffix), written atomically; returns the path."""
        return plot_sensitivity(self, path)

    # ---- printing ---------------------------------------------------------------------------------

    def table(self, k: int | None = 10) -> str:
        """The most fragile units first (``k`` of them; all with ``None``), with their drop at a few amounts."""
        shown = _spread(self.amounts, 5)
        names = self.most_sensitive(k)
        width = max([len(n) for n in names] + [4])
        head = f"{'unit':<{width}}  {'params':>10}" + "".join(f"  {'drop@' + format(a, 'g'):>10}" for a in shown)
        lines = [head + f"  {'mean drop':>10}"]
        for name in names:
            curve = self.curve(name)
            drops = dict(zip(curve.amounts, self.drops(name)))
            cells = "".join(f"  {drops[a]:>10.4g}" for a in shown)
            lines.append(f"{name:<{width}}  {curve.params:>10,}{cells}  {self.sensitivity_of(name):>10.4g}")
        hidden = len(self.curves) - len(names)
        if hidden > 0:
            lines.append(f"... and {hidden} more units")
        return "\n".join(lines)

    def summary(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        return (
            f"sensitivity of {self.label} ({direction} is better; dense {self.dense:.4g}) to {self.granularity} "
            f"pruning by {self.method}: {len(self.curves)} units x {len(self.amounts)} amounts, "
            f"{self.evaluations} evaluations in {self.seconds:.1f} s"
        )

    def __str__(self) -> str:
        return "\n".join([self.summary(), self.table(), *self.notes])


def exact_pattern(name: str) -> str:
    """A ``per_layer``/``include`` pattern matching exactly ``name`` (``re:`` when it holds glob characters)."""
    return f"re:{re.escape(name)}" if any(ch in name for ch in "*?[") else name


def _spread(values: list[float], count: int) -> list[float]:
    """At most ``count`` of ``values``, evenly spread, first and last included."""
    if len(values) <= count:
        return list(values)
    step = (len(values) - 1) / (count - 1)
    return [values[round(i * step)] for i in range(count)]


def _write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")
