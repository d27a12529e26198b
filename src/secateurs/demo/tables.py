"""The demo's printed output: the table of every measured model, the accuracy matrix, and the report around them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from secateurs.demo.reading import reading
from secateurs.measure import NOISY_SPREAD

if TYPE_CHECKING:  # only the result's type; the tables read it, the sweep builds it
    from secateurs.demo.sweep import DemoResult, Evaluation


def format_table(result: DemoResult) -> str:
    """Every measured model on one line, grouped by method and scope, the dense model first."""
    header = (
        f"{'method':<20} {'scope':<6} {'ratio':>5} {'accuracy':>8} {'change':>7} {'nonzero':>9} "
        f"{'sparsity':>8} {'size KB':>8} {'latency ms':>10} {'spread':>6} {'x dense':>7}"
    )
    dense = result.dense

    def line(method: str, scope: str, ratio: str, ev: Evaluation) -> str:
        change = "" if ev is dense else f"{100 * (ev.accuracy - dense.accuracy):+.1f}"
        return (
            f"{method:<20} {scope:<6} {ratio:>5} {ev.accuracy:>8.1%} {change:>7} {ev.nonzero:>9,} "
            f"{ev.sparsity:>8.1%} {ev.sparse_kb:>8.1f} {ev.latency_ms:>10.3f} {ev.latency_spread:>6.0%} "
            f"{ev.latency_ratio:>7.2f}"
        )

    lines = [header, "-" * len(header), line("dense (not pruned)", "", "", dense)]
    previous = None
    for row in result.rows:
        if (row.method, row.scope) != previous:
            lines.append("")
            previous = (row.method, row.scope)
        lines.append(line(row.method, row.scope, f"{row.ratio:g}", row.evaluation))
    return "\n".join(lines)


def format_matrix(result: DemoResult) -> str:
    """Accuracy (%) of each method and scope at each ratio: the experiment at a glance."""
    ratios = sorted({row.ratio for row in result.rows})
    header = f"{'accuracy % at ratio':<27}" + "".join(f"{r:>6g}" for r in ratios)
    lines = [header, "-" * len(header)]
    for method in dict.fromkeys(row.method for row in result.rows):
        for scope in dict.fromkeys(row.scope for row in result.rows):
            curve = dict(result.curve(method, scope))
            if curve:
                lines.append(f"{method + ' ' + scope:<27}" + "".join(f"{100 * curve[r]:>6.1f}" for r in ratios))
    return "\n".join(lines)


def _latency_legend(result: DemoResult) -> str:
    """How latency was timed, and a warning when the timings spread too much to be trusted."""
    timing = result.timing
    threads = f"{timing.threads} thread{'' if timing.threads == 1 else 's'}"
    legend = (
        f"Latency = median ms per batch of {result.config.latency_batch} on {threads}; the dense "
        f"model and every copy timed interleaved over {timing.rounds} rounds; spread = interquartile range / "
        "median; x dense = median of the per-round ratios to the dense model's time."
    )
    if timing.noisy:
        legend += (
            f"\nWarning: noisy latency: timings spread by up to {timing.spread:.0%} of their median between rounds "
            f"(more than {NOISY_SPREAD:.0%}); other work is probably running. Rerun on a quieter machine or with a "
            "longer --latency-time."
        )
    return legend


def format_report(result: DemoResult, *, full: bool = True) -> str:
    """The demo's printed output: what was run, the table, the accuracy matrix and the reading."""
    source = (
        f"cached model {result.cache_path}"
        if result.cached
        else f"trained in {result.train_seconds:.1f} s, cached at {result.cache_path}"
    )
    head = (
        f"Demo CNN on {result.dataset_description} ({result.test_size} test samples, {source}).\n"
        f"Pruned layers: every Conv and Linear layer except the output layer. Size = sparse safetensors.\n"
        f"{_latency_legend(result)}"
    )
    blocks = [head]
    if full:
        blocks.append(format_table(result))
    blocks += [format_matrix(result), reading(result), f"Finished in {result.seconds:.1f} s."]
    return "\n\n".join(blocks)
