"""The study's figures, drawn from a :class:`StudyResult` alone (matplotlib, Agg backend: no display, no network).

:data:`FIGURES` lists them in report order, each with the file it is written to, a caption, and whether a
result has what it needs (no fine-tuning, no recovery figure). :func:`draw_figures` writes the PNGs
atomically; since they read nothing but the result, ``secateurs report`` redraws them from ``study.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secateurs.analysis.plots import plot_sensitivity
from secateurs.analysis.study_result import StudyResult
from secateurs.sources.common import require
from secateurs.storage import atomic_file

DPI = 110
_SCOPE_MARKERS = {"local": "o", "global": "s"}


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot state, no display)."""
    require("matplotlib", "the study's figures", "matplotlib", "plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(count)]


def _save(figure: Any, path: Path) -> Path:
    with atomic_file(path) as temp:
        figure.savefig(temp, format="png", dpi=DPI)
    return path


def _metric_axis(axes: Any, result: StudyResult) -> None:
    direction = "higher" if result.higher_is_better else "lower"
    axes.set_ylabel(f"{result.label}, {direction} is better")
    axes.axhline(result.dense, color="black", linestyle="--", linewidth=1, label="dense")
    axes.grid(True, alpha=0.3)


# ---- the figures ---------------------------------------------------------------------------------


def draw_curves(result: StudyResult, path: Path) -> Path:
    """Metric against amount, one line per method, one panel per scope."""
    scopes = result.scopes
    figure = new_figure(5.2 * len(scopes) + 1.5, 4.6)
    panels = figure.subplots(1, len(scopes), sharey=True, squeeze=False)[0]
    for axes, scope in zip(panels, scopes):
        for method, colour in zip(result.methods, _colours(len(result.methods))):
            rows = result.curve(method, scope)
            axes.plot([r.amount for r in rows], [r.value for r in rows], marker="o", color=colour, label=method)
        _metric_axis(axes, result)
        axes.set_title(f"{scope} scope")
        axes.set_xlabel("amount pruned (fraction of weights or channels)")
    panels[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    figure.suptitle(f"{result.model}: {result.metric} against the amount pruned")
    return _save(figure, path)


def draw_histograms(result: StudyResult, path: Path) -> Path:
    """Each chosen layer's nonzero weights, dense and after each method (zeros counted in the titles)."""
    layers = list(dict.fromkeys(h.layer for h in result.histograms))
    models = list(dict.fromkeys(h.model for h in result.histograms))
    figure = new_figure(2.6 * len(models) + 0.5, 2.3 * len(layers) + 0.6)
    grid = figure.subplots(len(layers), len(models), squeeze=False, sharex="row")
    found = {(h.layer, h.model): h for h in result.histograms}
    for row, layer in enumerate(layers):
        for column, model in enumerate(models):
            axes, item = grid[row][column], found.get((layer, model))
            if item is None:
                axes.set_axis_off()
                continue
            axes.stairs(item.counts, item.edges, fill=True, color="tab:blue" if model == "dense" else "tab:orange")
            gone = item.zeros + item.removed
            total = sum(item.counts) + gone
            axes.set_title(f"{model}\n{gone / total:.0%} zero or removed" if gone else f"{model}", fontsize=8)
            axes.tick_params(labelsize=7)
        grid[row][0].set_ylabel(f"{layer}\nnonzero weights", fontsize=8)
    detail = result.settings.get("detail_amount")
    figure.suptitle(f"Weight histograms, dense and after each method at amount {detail:g}")
    return _save(figure, path)


def draw_layer_sparsity(result: StudyResult, path: Path) -> Path:
    """Per-layer sparsity of each method at the detail amount, one panel per scope."""
    scopes = list(dict.fromkeys(item.scope for item in result.layer_sparsity))
    figure = new_figure(9.5, 3.2 * len(scopes) + 0.8)
    panels = figure.subplots(len(scopes), 1, squeeze=False)[:, 0]
    for axes, scope in zip(panels, scopes):
        items = [item for item in result.layer_sparsity if item.scope == scope]
        width = 0.8 / len(items)
        for index, (item, colour) in enumerate(zip(items, _colours(len(items)))):
            positions = [i + (index - (len(items) - 1) / 2) * width for i in range(len(item.layers))]
            axes.bar(positions, item.sparsity, width=width, color=colour, label=item.method)
        names = items[0].layers
        labels = [name.removesuffix(".weight") for name in names]
        axes.set_xticks(range(len(names)), labels, rotation=45, ha="right", fontsize=7)
        axes.set_ylim(0, 1)
        axes.set_ylabel("fraction zero or removed")
        axes.set_title(f"{scope} scope at amount {items[0].amount:g}")
        axes.grid(True, axis="y", alpha=0.3)
    panels[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(figure, path)


def draw_sensitivity(result: StudyResult, path: Path) -> Path:
    assert result.sensitivity is not None
    return plot_sensitivity(result.sensitivity, path)


def draw_pareto(result: StudyResult, path: Path) -> Path:
    """The metric against the MACs left (and the latency against dense, when timed): the trade-off."""
    axes_x: list[tuple[str, Callable[[Any], float | None]]] = [
        ("MACs touching a nonzero weight, fraction of dense", lambda r: r.nonzero_macs / result.dense_macs)]
    if result.timing.get("measured"):
        axes_x.append((f"latency / dense latency (interleaved, {result.timing['threads']} thread(s))",
                       lambda r: r.latency_ratio))
    figure = new_figure(5.4 * len(axes_x) + 1.8, 4.6)
    panels = figure.subplots(1, len(axes_x), sharey=True, squeeze=False)[0]
    for axes, (label, x_of) in zip(panels, axes_x):
        for method, colour in zip(result.methods, _colours(len(result.methods))):
            for scope in result.scopes:
                rows = result.curve(method, scope)
                axes.plot([x_of(r) for r in rows], [r.value for r in rows], marker=_SCOPE_MARKERS.get(scope, "o"),
                          linestyle="-" if scope == "local" else ":", color=colour, label=f"{method} ({scope})")
        axes.plot([1.0], [result.dense], marker="*", markersize=12, color="black", linestyle="none")
        _metric_axis(axes, result)
        axes.set_xlabel(label)
    panels[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    figure.suptitle("What each copy costs against what it scores (dense: the star)")
    return _save(figure, path)


def draw_recovery(result: StudyResult, path: Path) -> Path:
    """One-shot, fine-tuned and gradual pruning side by side, per method and amount."""
    groups = list(dict.fromkeys((r.method, r.amount) for r in result.recovery))
    modes = ["oneshot", *dict.fromkeys(r.mode for r in result.recovery)]
    figure = new_figure(max(6.0, 2.2 * len(groups) + 2.5), 4.6)
    axes = figure.subplots()
    width = 0.8 / len(modes)
    for index, (mode, colour) in enumerate(zip(modes, _colours(len(modes)))):
        values = [_mode_value(result, method, amount, mode) for method, amount in groups]
        positions = [g + (index - (len(modes) - 1) / 2) * width for g in range(len(groups))]
        bars = axes.bar(positions, [v if v is not None else 0.0 for v in values], width=width, color=colour,
                        label=_MODE_LABELS.get(mode, mode))
        labels = [f"{v:.1f}" if v is not None else "" for v in values]
        axes.bar_label(bars, labels=labels, label_type="center", fontsize=7, color="white")
    axes.set_xticks(range(len(groups)), [f"{method}\nat {amount:g}" for method, amount in groups], fontsize=8)
    _metric_axis(axes, result)
    epochs = result.recovery[0].epochs
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.suptitle(f"One-shot pruning against {epochs} epochs of fine-tuning ({result.recovery[0].scope} scope)")
    return _save(figure, path)


_MODE_LABELS = {"oneshot": "one-shot, no fine-tuning", "finetuned": "one-shot + fine-tuning",
                "iterative": "iterative + fine-tuning", "gradual": "gradual + fine-tuning"}


def _mode_value(result: StudyResult, method: str, amount: float, mode: str) -> float | None:
    if mode == "oneshot":
        row = result.row(method, result.recovery[0].scope, amount)
        return None if row is None else row.value
    return next((r.value for r in result.recovery if (r.method, r.amount, r.mode) == (method, amount, mode)), None)


def draw_blocks(result: StudyResult, path: Path) -> Path:
    """Per-block sensitivity curves, and every block pruned against the fragile ones kept dense."""
    blocks = result.blocks
    assert blocks is not None
    figure = new_figure(12.0, 4.6)
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    for curve, colour in zip(blocks.sensitivity.curves, _colours(len(blocks.sensitivity.curves))):
        style = "-" if curve.name in blocks.fragile else ":"
        left.plot(curve.amounts, curve.values, marker="o", linestyle=style, color=colour, label=curve.name)
    _metric_axis(left, result)
    left.set_xlabel(f"fraction of each layer's output rows pruned in one block ({blocks.method})")
    left.set_title("Each block pruned alone (solid: the most fragile)")
    left.legend(fontsize=7, frameon=False)
    _block_bars(right, result)
    return _save(figure, path)


def _block_bars(axes: Any, result: StudyResult) -> None:
    blocks = result.blocks
    assert blocks is not None
    labels = [variant.label for variant in blocks.variants]
    series = [("pruned", [v.value for v in blocks.variants])]
    if blocks.epochs:
        series.append((f"+ {blocks.epochs} epochs fine-tuning", [v.finetuned or 0.0 for v in blocks.variants]))
    width = 0.8 / len(series)
    for index, ((name, values), colour) in enumerate(zip(series, _colours(len(series)))):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = axes.bar(positions, values, width=width, color=colour, label=name)
        axes.bar_label(bars, fmt="%.1f", label_type="center", fontsize=7, color="white")
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    _metric_axis(axes, result)
    axes.set_title(f"All blocks at amount {blocks.amount:g}")
    axes.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)


# ---- the list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file, how it is drawn, its caption, and whether a result has it."""

    file: str
    draw: Callable[[StudyResult, Path], Path]
    caption: Callable[[StudyResult], str]
    applies: Callable[[StudyResult], bool] = lambda result: True


FIGURES = (
    FigureSpec("curves.png", draw_curves, lambda r: (
        f"{r.metric} against the amount pruned, per method: local scope prunes every layer by the amount, global "
        "ranks all layers together.")),
    FigureSpec("histograms.png", draw_histograms, lambda r: (
        "Weight histograms of chosen layers, dense and after each method (at the detail amount): magnitude "
        "criteria remove the weights nearest zero, random ones thin the whole distribution, and channel pruning "
        "removes whole rows wherever their weights lie."),
        lambda r: bool(r.histograms)),
    FigureSpec("layer_sparsity.png", draw_layer_sparsity, lambda r: (
        "Per-layer sparsity at the detail amount: local scope is flat by construction, global scope shows which "
        "layers the ranking spares."), lambda r: bool(r.layer_sparsity)),
    FigureSpec("sensitivity.png", draw_sensitivity, lambda r: (
        "Sensitivity: each layer pruned alone, all others dense; the lower a curve falls, the more fragile the "
        "layer."), lambda r: r.sensitivity is not None),
    FigureSpec("pareto.png", draw_pareto, lambda r: (
        "The Pareto view: metric against the MACs left and, where timed, the latency against dense (each copy "
        "timed interleaved with the dense model). Masks remove no work from a dense kernel: only physically "
        "shrunk copies run faster.")),
    FigureSpec("recovery.png", draw_recovery, lambda r: (
        "One-shot pruning without fine-tuning, one-shot then fine-tuning, and gradual pruning while "
        "fine-tuning, each given the same epochs."), lambda r: bool(r.recovery)),
    FigureSpec("blocks.png", draw_blocks, lambda r: (
        "Per-block sensitivity, then pruning every block against keeping the most fragile blocks dense "
        "(embeddings and the output layer stay dense)."), lambda r: r.blocks is not None),
)


def draw_figures(result: StudyResult, folder: str | os.PathLike[str]) -> list[tuple[FigureSpec, Path]]:
    """Every figure that applies to ``result``, written into ``folder``; ``(spec, path)`` in report order."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    return [(spec, spec.draw(result, target / spec.file)) for spec in FIGURES if spec.applies(result)]
