"""What the prune pipeline reports: the JSON object of ``secateurs prune --json``, also each recipe prune step's
``result.json``."""

from __future__ import annotations

from typing import Any

from secateurs.measure import LatencyComparison
from secateurs.recipes.prune_pipeline import PruneRun

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
