"""What ``secateurs prune`` prints: one JSON object (``--json``), or a before/after report for people."""

from __future__ import annotations

from typing import Any

from secateurs.cli.output import human_bytes, human_count, plural, row
from secateurs.cli.steps import PruneRun


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
        "pruned_sparsity": last.sparsity if last else 0.0,
        "layers_pruned": len(last.layers) if last else 0,
        "layers_skipped": [{"name": s.name, "reason": s.reason} for s in last.skipped] if last else [],
        "macs_before": before.macs,
        "macs_after": after.macs,
        "nonzero_macs_after": after.nonzero_macs,
        "latency_ms_before": before.latency_ms,
        "latency_ms_after": after.latency_ms,
        "latency_threads": after.latency.threads if after.latency else None,
        "size_bytes_before": before.size.dense_bytes,
        "size_bytes_after": after.size.sparse_bytes,
        "dense_bytes_after": after.size.dense_bytes,
        "metrics_before": run.metrics_before,
        "metrics_after": run.metrics_after,
        "output_dir": str(run.saved.path) if run.saved else None,
        "files": run.saved.files if run.saved else None,
        "seconds": run.seconds,
        **run.result,
    }


def _headline(r: dict[str, Any]) -> str:
    """What was asked and what it did, in one line."""
    amount = "N:M" if r["amount"] is None else r["amount"]
    if "shrink" in r:
        shrunk = r["shrink"]
        removed = shrunk["removed_layers"]
        cut = plural(len(removed), "block") + " removed" if removed else f"{shrunk['groups_cut']}/{shrunk['groups']} groups cut"
        done = f"{cut}, physically; max |shrunk - masked| = {r['max_abs_diff']:.2g} (tolerance {shrunk['tolerance']:.2g})"
        verb = "Shrunk"
    else:
        skipped = len(r["layers_skipped"])
        done = f"{plural(r['layers_pruned'], 'layer')} pruned to {r['pruned_sparsity']:.1%}, {skipped} left alone"
        verb = "Pruned"
    return f"{verb} {r['model']} ({r['task']}): {r['method']}, {r['granularity']}, {r['scope']}, amount {amount}; {done}"


def _table(r: dict[str, Any]) -> list[str]:
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
    if r["latency_ms_before"] is not None:
        note = f"median, {plural(r['latency_threads'], 'thread')}"
        lines.append(row("latency", f"{r['latency_ms_before']:.2f} ms", f"{r['latency_ms_after']:.2f} ms", note))
    sizes = human_bytes(r["size_bytes_before"]), human_bytes(r["size_bytes_after"])
    lines.append(row("size on disk", *sizes, "dense safetensors / sparse format"))
    metrics_after = r["metrics_after"] or {}
    for name, value in (r["metrics_before"] or {}).items():
        lines.append(row(name, f"{value:.4f}", f"{metrics_after.get(name, float('nan')):.4f}"))
    return lines


def format_prune_result(run: PruneRun) -> str:
    """The human-readable report of ``secateurs prune``."""
    r = prune_result(run)
    lines = [_headline(r), "", *_table(r)]
    if run.args.layers and run.reports:  # physical removal keeps no per-layer mask table
        lines += ["", str(run.reports[-1])]
    lines.append("")
    if run.saved:
        files = ", ".join(f"{name} {human_bytes(size)}" for name, size in run.saved.files.items())
        lines.append(f"Saved to {run.saved.path}/ ({files}, manifest.json)")
    else:
        lines.append("Not saved (give --out DIR to save the pruned model).")
    return "\n".join(lines)
