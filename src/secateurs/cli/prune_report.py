"""What ``secateurs prune`` prints: one JSON object (``--json``, :func:`secateurs.recipes.prune_result.prune_result`),
or a before/after report for people."""

from __future__ import annotations

from typing import Any

from secateurs.cli.output import (
    human_bytes,
    human_count,
    median_and_spread,
    noisy_latency_warning,
    plural,
    row,
    timing_note,
)
from secateurs.measure import LatencyComparison
from secateurs.recipes.prune_pipeline import PruneRun
from secateurs.recipes.prune_result import prune_result


def _latency_rows(comparison: LatencyComparison) -> list[str]:
    """Both medians with their spreads, and the ratio, from one interleaved comparison."""
    before, after, ratio = comparison["before"], comparison["after"], comparison.ratios["after"]
    return [
        row(
            "latency ms",
            median_and_spread(before.median_ms, before.iqr_ms),
            median_and_spread(after.median_ms, after.iqr_ms),
            f"{timing_note(comparison.rounds, comparison.threads)}, interleaved",
        ),
        row("latency ratio", "", median_and_spread(ratio.median, ratio.iqr), "after / before, per round"),
    ]


def _target_lines(r: dict[str, Any]) -> list[str]:
    """Target against achieved, under the headline."""
    target = r.get("target")
    if not target:
        return []
    what = "sparsity" if target["kind"] == "sparsity" else f"{target['cost']} over the model as loaded"
    achieved = "n/a" if r["achieved"] is None else f"{r['achieved']:.3f}"
    line = (f"Target {target['target']}: {what} {achieved} achieved ({target['predicted']:.3f} predicted; each layer's "
            f"amount from {target['source']}")
    if target["predicted_drop"] is not None:
        line += f", predicted drop {target['predicted_drop']:.3g} {target['drop_unit']}"
    return [line + ")", *target["notes"]]


def _headline(r: dict[str, Any]) -> str:
    """What was asked and what it did, in one line."""
    amount = "N:M" if r["amount"] is None else r["amount"]
    if r.get("target"):
        amount = f"per layer for {r['target']['target']}"  # chosen by the allocation
    if "shrink" in r:
        shrunk = r["shrink"]
        removed = shrunk["removed_layers"]
        cut = plural(len(removed), "block") + " removed" if removed else f"{shrunk['groups_cut']}/{shrunk['groups']} groups cut"
        done = f"{cut}, {r['params_removed']:,} parameters removed physically; {shrunk['verification']}"
        verb = "Shrunk"
    else:
        skipped = len(r["layers_skipped"])
        done = (
            f"{plural(r['layers_pruned'], 'layer')} pruned to {r['pruned_sparsity']:.1%} "
            f"({r['nonzero_removed']:,} weights zeroed), {skipped} left alone"
        )
        verb = "Pruned"
    return f"{verb} {r['model']} ({r['task']}): {r['method']}, {r['granularity']}, {r['scope']}, amount {amount}; {done}"


def _table(r: dict[str, Any], comparison: LatencyComparison | None) -> list[str]:
    """The before/after measurements and task metrics."""
    lines = [
        row("", "before", "after"),
        row("parameters", f"{r['params_before']:,}", f"{r['params_after']:,}"),
        row("nonzero", f"{r['nonzero_before']:,}", f"{r['nonzero_after']:,}", f"{r['sparsity']:.1%} of all parameters are zero"),
        row(
            "MACs",
            human_count(r["macs_before"]),
            human_count(r["macs_after"]),
            f"{human_count(r['nonzero_macs_after'])} touch a nonzero weight",
        ),
    ]
    if comparison is not None:
        lines += _latency_rows(comparison)
    sizes = human_bytes(r["size_bytes_before"]), human_bytes(r["size_bytes_after"])
    lines.append(row("size on disk", *sizes, "dense safetensors / sparse format"))
    metrics_after = r["metrics_after"] or {}
    for name, value in (r["metrics_before"] or {}).items():
        lines.append(row(name, f"{value:.4f}", f"{metrics_after.get(name, float('nan')):.4f}"))
    return lines


def _streamed_headline(r: dict[str, Any]) -> str:
    """What a streamed run did, in one line: masks, or whole blocks removed by their influence."""
    if "removed_layers" in r:
        removed = ", ".join(f"{name} ({r['influence'][name]:.3g})" for name in r["removed_layers"])
        blocks = f"{len(r['removed_layers'])} of {plural(len(r['influence']), 'block')}"
        return (f"Streamed {r['model']} block by block: {blocks} removed, the least influential on the calibration "
                f"data (1 - cos of their input and output): {removed}")  # fmt: skip
    amount = "N:M" if r["amount"] is None else r["amount"]
    pruned = f"{plural(r['layers_pruned'], 'layer')} pruned to {r['pruned_sparsity']:.1%}"
    return (f"Streamed {r['model']} block by block: {r['method']}, {r['granularity']}, {r['scope']}, amount {amount}; "
            f"{pruned}, {len(r['layers_skipped'])} left alone")  # fmt: skip


def _streamed_report(r: dict[str, Any], run: PruneRun) -> str:
    """What a streamed run did, where its time and memory went, and how to load its output."""
    peak = "estimated peak" + (f"; this process peaked at {human_bytes(r['peak_rss_bytes'])}" if r["peak_rss_bytes"] else "")
    steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in r["step_seconds"].items())
    removed = f"{r['pruned_sparsity']:.1%} removed" if "removed_layers" in r else f"{r['sparsity']:.1%} zeroed by pruning"
    lines = [
        _streamed_headline(r),
        *([f"Streamed because {r['stream_reason']}."] if "stream_reason" in r else []),
        "",
        row("", "before", "after"),
        row("parameters", f"{r['params_before']:,}", f"{r['params_after']:,}", removed),
        row("size on disk", human_bytes(r["size_bytes_before"]), human_bytes(r["size_bytes_after"]), "checkpoint / output"),
        row("memory", "", human_bytes(r["memory"]["peak"]), peak),
        row("seconds", "", f"{sum(r['step_seconds'].values()):.1f}", f"over {plural(r['blocks'], 'block')}: {steps}"),
    ]  # fmt: skip
    if r["resumed_from"]:
        lines.append(f"Resumed from block {r['resumed_from']} of an unfinished run in {r['output_dir']}.")
    if run.args.layers and run.reports:  # whole blocks removed keep no per-layer table
        lines += ["", str(run.reports[-1])]
    saved = (f"Saved to {r['output_dir']}/ (a Hugging Face directory, {r['format']} shards, {len(r['files'])} files, "
             f"{human_bytes(r['size_bytes_after'])}); load it with {r['load_with']}")  # fmt: skip
    lines += ["", saved]
    return "\n".join(lines)


def format_prune_result(run: PruneRun) -> str:
    """The human-readable report of ``secateurs prune``."""
    r = prune_result(run)
    if run.streamed is not None:
        return _streamed_report(r, run)
    lines = [_headline(r), *_target_lines(r), "", *_table(r, run.latency)]
    if run.latency is not None and run.latency.noisy:
        lines.append(noisy_latency_warning(run.latency.spread))
    if run.args.layers and run.reports:  # physical removal keeps no per-layer mask table
        lines += ["", str(run.reports[-1])]
    lines.append("")
    if run.saved:
        files = ", ".join(f"{name} {human_bytes(size)}" for name, size in run.saved.files.items())
        lines.append(f"Saved to {run.saved.path}/ ({files}, manifest.json)")
    else:
        lines.append("Not saved (give --out DIR to save the pruned model).")
    return "\n".join(lines)
