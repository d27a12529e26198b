"""What ``secateurs prune`` prints: one JSON object (``--json``), or a before/after report for people."""

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
from secateurs.cli.steps import PruneRun
from secateurs.measure import LatencyComparison

#: The latency keys of ``secateurs prune --json``; all None with --no-latency.
LATENCY_KEYS = (
    "latency_ms_before",
    "latency_ms_after",
    "latency_ratio",
    "latency_spread",
    "latency_noisy",
    "latency_threads",
    "latency_rounds",
)


def prune_result(run: PruneRun) -> dict[str, Any]:
    """The JSON object ``secateurs prune --json`` prints."""
    before, after, loaded, args = run.before, run.after, run.loaded_model, run.args
    assert before is not None and after is not None, "both measure steps run"
    last = run.reports[-1] if run.reports else None
    return {
        "model": args.model,
        "source": loaded.spec,
        "task": loaded.task,
        "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
        "method": args.method,
        "granularity": args.granularity,
        "scope": args.scope,
        "amount": args.amount,
        "seed": args.seed,
        "params_before": before.params,
        "params_after": after.params,
        "nonzero_before": before.nonzero,
        "nonzero_after": after.nonzero,
        "sparsity": after.sparsity,
        **_pruned_layers(run),
        "params_removed": before.params - after.params,
        "nonzero_removed": before.nonzero - after.nonzero,
        "layers_skipped": [{"name": s.name, "reason": s.reason} for s in last.skipped] if last else [],
        "macs_before": before.macs,
        "macs_after": after.macs,
        "nonzero_macs_after": after.nonzero_macs,
        **_latency_result(run.latency),
        "size_bytes_before": before.size.dense_bytes,
        "size_bytes_after": after.size.sparse_bytes,
        "dense_bytes_after": after.size.dense_bytes,
        "metrics_before": run.metrics_before,
        "metrics_after": run.metrics_after,
        "output_dir": str(run.saved.path) if run.saved else None,
        "files": run.saved.files if run.saved else None,
        "seconds": run.seconds,
        **_target_result(run),
        **run.result,
    }


def _pruned_layers(run: PruneRun) -> dict[str, Any]:
    """``layers_pruned`` and ``pruned_sparsity``: with masks, the layers the last step pruned and their share of
    zeros; after --shrink, the groups cut and the share of parameters physically removed."""
    shrunk = run.result.get("shrink")
    if shrunk is not None:
        before, after = run.before, run.after
        assert before is not None and after is not None
        return {"layers_pruned": shrunk["groups_cut"], "pruned_sparsity": 1 - after.params / before.params}
    last = run.reports[-1] if run.reports else None
    return {"layers_pruned": len(last.layers) if last else 0, "pruned_sparsity": last.sparsity if last else 0.0}


def _latency_result(comparison: LatencyComparison | None) -> dict[str, Any]:
    """Medians of the model as loaded and pruned, timed interleaved; ``latency_ratio`` is the median of the
    per-round after/before ratios; ``latency_spread`` holds the relative spreads (interquartile range / median)
    of both times and of the ratio, and ``latency_noisy`` is true when any of them exceeds 10%."""
    if comparison is None:
        return dict.fromkeys(LATENCY_KEYS)
    before, after, ratio = comparison["before"], comparison["after"], comparison.ratios["after"]
    return {
        "latency_ms_before": before.median_ms,
        "latency_ms_after": after.median_ms,
        "latency_ratio": ratio.median,
        "latency_spread": {"before": before.spread, "after": after.spread, "ratio": ratio.spread},
        "latency_noisy": comparison.noisy,
        "latency_threads": comparison.threads,
        "latency_rounds": comparison.rounds,
    }


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


def _target_result(run: PruneRun) -> dict[str, Any]:
    """``target``: the allocation (what was asked, what it predicted, each layer's amount); ``achieved``: the
    pruned model's ratio in the target's terms, from the before/after measurements (latency: the interleaved
    comparison, else the allocation's own measurement of a copy)."""
    allocation, before, after = run.allocation, run.before, run.after
    if allocation is None or before is None or after is None:
        return {}
    shrunk = bool(run.args.shrink)
    ratios = {
        "params": (after.params if shrunk else after.nonzero) / before.params,
        "macs": (after.macs if shrunk else after.nonzero_macs) / before.macs,
        "size": (after.size.dense_bytes if shrunk else after.size.sparse_bytes) / before.size.dense_bytes,
        "sparsity": 1 - run.reports[-1].sparsity if run.reports else None,
        "latency": run.latency.ratios["after"].median if run.latency else allocation.achieved,
    }
    return {"target": allocation.to_dict(), "achieved": allocation.target.reading(ratios[allocation.cost])}


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


def format_prune_result(run: PruneRun) -> str:
    """The human-readable report of ``secateurs prune``."""
    r = prune_result(run)
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
