"""What the prune pipeline reports: the JSON object of ``secateurs prune --json``, also each recipe prune step's
``result.json``."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from secateurs.measure import LatencyComparison
from secateurs.recipes.prune_checks import checkpoint_directory
from secateurs.recipes.prune_pipeline import PruneRun, weights_format
from secateurs.streaming import Checkpoint, DepthReport, StreamReport

try:
    import resource
except ImportError:  # Windows: no getrusage
    resource = None  # type: ignore[assignment]

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
    if run.streamed is not None:
        return streamed_result(run, run.streamed)
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
        "scope": run.records[-1]["scope"] if run.records else args.scope,
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


#: Keys of the in-memory result that a streamed run does not measure (it never holds the model): all None.
UNMEASURED_WHEN_STREAMED = (
    "nonzero_before", "nonzero_after", "nonzero_removed", "macs_before", "macs_after", "nonzero_macs_after",
    *LATENCY_KEYS, "metrics_before", "metrics_after",
)  # fmt: skip


def streamed_result(run: PruneRun, streamed: StreamReport | DepthReport) -> dict[str, Any]:
    """The JSON object of a streamed run: the in-memory keys that apply (sizes and parameters from the headers;
    with masks, the share of zeros the pruning made), the memory estimate, the process's peak and the seconds
    per step; with --granularity layer, each block's influence and the blocks removed."""
    args = run.args
    checkpoint = Checkpoint(checkpoint_directory(args.model))
    files = {f.name: f.stat().st_size for f in sorted(streamed.out_dir.iterdir()) if f.is_file()}
    weights = "dense" if isinstance(streamed, DepthReport) else weights_format(args)
    return {
        "model": args.model, "source": args.model, "task": None, "input_shape": None, "method": args.method,
        "granularity": args.granularity, "amount": args.amount, "seed": args.seed,
        **(_depth_keys(streamed, checkpoint) if isinstance(streamed, DepthReport) else _mask_keys(streamed, checkpoint)),
        "size_bytes_before": checkpoint.nbytes(), "size_bytes_after": sum(files.values()),
        "output_dir": str(streamed.out_dir), "files": files, "seconds": run.seconds, "streamed": True,
        "memory": streamed.memory.to_dict(), "peak_rss_bytes": _peak_rss_bytes(),
        "step_seconds": streamed.step_seconds(), "blocks": len(streamed.blocks), "format": weights,
        "load_with": _load_with(streamed, checkpoint, weights), **dict.fromkeys(UNMEASURED_WHEN_STREAMED), **run.result,
    }  # fmt: skip


def _params(checkpoint: Checkpoint) -> int:
    """Elements of the checkpoint's floating-point tensors, from its headers."""
    return sum(math.prod(info.shape) for info in checkpoint.tensors.values() if info.dtype.is_floating_point)


def _mask_keys(streamed: StreamReport, checkpoint: Checkpoint) -> dict[str, Any]:
    """The keys of a streamed run with masks: the shapes stay, the pruned layers gain zeros."""
    report, params = streamed.prune, _params(checkpoint)
    return {
        "scope": report.scope, "params_before": params, "params_after": params, "params_removed": 0,
        "sparsity": report.zeros / params,  # zeros the pruning made; the checkpoint's own are not read
        "layers_pruned": len(report.layers), "pruned_sparsity": report.sparsity,
        "layers_skipped": [{"name": s.name, "reason": s.reason} for s in report.skipped],
        "dense_bytes_after": checkpoint.nbytes(), "resumed_from": streamed.resumed_from,
    }  # fmt: skip


def _depth_keys(streamed: DepthReport, checkpoint: Checkpoint) -> dict[str, Any]:
    """The keys of a streamed depth pruning: parameters before and after, each block's influence, those removed."""
    before, output = _params(checkpoint), Checkpoint(streamed.out_dir)
    after = _params(output)
    return {
        "scope": None, "params_before": before, "params_after": after, "params_removed": before - after,
        "sparsity": 0.0, "layers_pruned": len(streamed.dropped), "pruned_sparsity": 1 - after / before,
        "layers_skipped": [], "dense_bytes_after": output.nbytes(), "resumed_from": streamed.resumed_from,
        "removed_layers": streamed.dropped, "influence": streamed.influence,
    }  # fmt: skip


def _peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far; None where the system does not say (Windows)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _load_with(streamed: StreamReport | DepthReport, checkpoint: Checkpoint, weights: str) -> str:
    """The Python that loads a streamed output."""
    if weights == "sparse":
        return "secateurs.storage.read_weights(SHARD) for each shard (write --format dense for plain from_pretrained)"
    architectures = json.loads((checkpoint.directory / "config.json").read_text()).get("architectures")
    return f"transformers.{(architectures or ['AutoModel'])[0]}.from_pretrained({str(streamed.out_dir)!r})"
