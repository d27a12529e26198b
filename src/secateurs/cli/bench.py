"""``secateurs bench``: a pruned model, its dense original and its exports side by side
(:func:`secateurs.export.bench`)."""

from __future__ import annotations

import argparse

from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_options
from secateurs.cli.output import (
    human_bytes,
    median_and_spread,
    noisy_latency_warning,
    print_json,
    timing_note,
)
from secateurs.export import BenchReport, bench, is_export_directory
from secateurs.recipes.options import BENCH_GROUPS
from secateurs.recipes.progress import say
from secateurs.sources import check_spec


def add_bench_arguments(parser: ArgumentParser) -> None:
    add_options(parser, BENCH_GROUPS)


def _metric_names(report: BenchReport) -> list[str]:
    return sorted({key for row in report.rows for key in (row.metrics or {})})


def format_bench_report(report: BenchReport) -> str:
    """One row per model or file: size, latency with its spread, ratio to the first row, metrics, notes."""
    metrics = _metric_names(report)
    header = f"{'':<22}{'size':>11}{'latency ms':>18}{'vs ' + report.rows[0].name:>12}" + "".join(
        f"{m:>18}" for m in metrics
    )
    lines = [header]
    for row in report.rows:
        size = human_bytes(row.bytes) if row.bytes is not None else "-"
        latency = median_and_spread(row.latency.median_ms, row.latency.iqr_ms) if row.latency else "-"
        ratio = f"{row.ratio.median:.2f}x" if row.ratio else "-"
        values = "".join(
            f"{row.metrics[m]:>18.4f}" if row.metrics and m in row.metrics else f"{'-':>18}" for m in metrics
        )
        lines.append(f"{row.name:<22}{size:>11}{latency:>18}{ratio:>12}{values}")
    if report.rounds:
        lines.append(f"\nlatency: {timing_note(report.rounds, report.threads)}, interleaved, denormals flushed")
    notes = [f"  {row.name}: {row.note}" for row in report.rows if row.note]
    if notes:
        lines += ["notes:", *notes]
    if report.noisy:
        lines.append(noisy_latency_warning(max(r.latency.spread for r in report.rows if r.latency)))
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    check_spec(args.model)
    for directory in args.exports:
        if not is_export_directory(directory):
            raise UsageError(
                f"{directory} is not an export directory (no export.json); write one with secateurs export"
            )
    say(f"benchmarking {args.model} against {len(args.exports)} export(s)")
    report = bench(
        args.model, args.exports, threads=args.threads, budget_s=args.latency_time, latency=args.latency,
        metric=args.evaluate,
    )  # fmt: skip
    if args.json:
        print_json({"model": args.model, **report.to_dict()})
    else:
        print(format_bench_report(report))
    return 0


COMMAND = Command(
    "bench",
    "compare a pruned model, its dense original and its exports: size, latency, metric",
    "Size on disk, latency (timed interleaved against the dense original, on --threads threads, denormals "
    "flushed) and the task metric where the model has one, for DIR, the dense model it came from and every file "
    "of every OUT written by secateurs export.",
    add_bench_arguments,
    run_bench,
    epilog=(
        "examples:\n  secateurs bench demo-50 demo-50-export\n"
        "  secateurs bench minilm-50 minilm-50-export --threads 4 --json"
    ),
)
