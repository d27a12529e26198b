"""Sensitivity curves as a figure (matplotlib, Agg backend: no display, nothing fetched), PNG or SVG.

One line per unit of the metric against the amount pruned, and the dense value as a dashed line. Up to
:data:`LEGEND_LIMIT` units get a legend beside the axes; more are coloured along a colour map in model
order, with a colour bar, so that early and late layers stand apart. Granularities scanned at a single
amount (N:M, whole blocks) become one bar per unit instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secateurs.analysis.metrics import EvaluationError
from secateurs.sources.common import require
from secateurs.storage import atomic_file

if TYPE_CHECKING:
    from secateurs.analysis.result import SensitivityResult

LEGEND_LIMIT = 10
FORMATS = ("png", "svg")
_X_LABELS = {
    "channel": "fraction of each group's channels removed",
    "head": "fraction of each attention block's heads removed",
}


def _figure() -> Any:
    require("matplotlib", "plotting", "matplotlib", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= LEGEND_LIMIT:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](i / max(count - 1, 1)) for i in range(count)]


def _lines(axes: Any, result: SensitivityResult) -> None:
    colours = _colours(len(result.curves))
    for curve, colour in zip(result.curves, colours):
        axes.plot(curve.amounts, curve.values, marker="o", markersize=3, linewidth=1.2, color=colour, label=curve.name)
    axes.axhline(result.dense, color="black", linestyle="--", linewidth=1.2, label="dense")
    axes.set_xlabel(_X_LABELS.get(result.granularity, f"fraction of each parameter pruned ({result.granularity})"))
    values = [v for curve in result.curves for v in curve.values if math.isfinite(v) and v > 0]
    if not result.higher_is_better and values and result.dense > 0 and max(values) / result.dense > 100:
        axes.set_yscale("log")


def _bars(axes: Any, result: SensitivityResult) -> None:
    names = result.units
    values = [curve.values[0] for curve in result.curves]
    axes.bar(range(len(names)), values, color=_colours(len(names)))
    axes.axhline(result.dense, color="black", linestyle="--", linewidth=1.2, label="dense")
    axes.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    what = "block removed" if result.granularity == "layer" else f"pruned {result.granularity}"
    axes.set_xlabel(f"unit ({what})")


def _legend(figure: Any, axes: Any, result: SensitivityResult) -> None:
    if len(result.curves) <= LEGEND_LIMIT or len(result.amounts) == 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        return
    from matplotlib import cm, colors

    mappable = cm.ScalarMappable(norm=colors.Normalize(0, len(result.curves) - 1), cmap="viridis")
    bar = figure.colorbar(mappable, ax=axes, pad=0.02)
    bar.set_label("unit, in model order (first to last)")
    axes.legend(handles=axes.get_lines()[-1:], loc="best", fontsize=8)


def plot_sensitivity(result: SensitivityResult, path: str | os.PathLike[str]) -> Path:
    """Draw ``result`` to ``path`` (``.png`` or ``.svg``), atomically; returns the path."""
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise EvaluationError(f"cannot plot to {target.name}: give a path ending in .png or .svg")
    figure = _figure()
    axes = figure.add_subplot()
    (_bars if len(result.amounts) == 1 else _lines)(axes, result)
    direction = "higher" if result.higher_is_better else "lower"
    axes.set_ylabel(f"{result.label}, {direction} is better")
    axes.set_title(f"Sensitivity to {result.granularity} pruning ({result.method}), one unit at a time")
    axes.grid(True, alpha=0.3)
    _legend(figure, axes, result)
    with atomic_file(target) as temp:
        figure.savefig(temp, format=kind, dpi=150)
    return target
