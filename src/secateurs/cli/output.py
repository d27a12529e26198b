"""What the commands print: progress for people at a terminal (:mod:`secateurs.recipes.progress`), JSON, and the
pieces of human-readable reports."""

from __future__ import annotations

import json
import math
from typing import Any

from secateurs.measure import NOISY_SPREAD, Measurements


def print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=2))


def human_count(value: float, unit: str = "") -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {suffix}{unit}"
    return f"{value:,.0f} {unit}".rstrip()


def human_bytes(value: int) -> str:
    for threshold, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= threshold:
            return f"{value / threshold:.1f} {suffix}"
    return f"{value} B"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def row(label: str, before: str, after: str, note: str = "") -> str:
    """One line of a before/after table."""
    return f"{label:<14}{before:>14}{after:>14}   {note}".rstrip()


def median_and_spread(median: float, iqr: float) -> str:
    """``12.3 ±0.4``: a median with half its interquartile range, to three significant digits."""
    decimals = max(0, 2 - math.floor(math.log10(median))) if median > 0 else 3
    return f"{median:.{decimals}f} ±{iqr / 2:.{decimals}f}"


def timing_note(rounds: int, threads: int) -> str:
    """How the latencies of a report were taken."""
    return f"median ±half IQR over {plural(rounds, 'round')}, {plural(threads, 'thread')}"


def noisy_latency_warning(spread: float) -> str:
    """The line a report prints when its timings spread too much to be trusted."""
    return (
        f"warning: noisy latency: timings spread by up to {spread:.0%} of their median between rounds (more than "
        f"{NOISY_SPREAD:.0%}); other work is probably running. Rerun on a quieter machine or with a longer "
        "--latency-time."
    )


def format_measurements(measured: Measurements) -> str:
    """MACs, size and latency of one model on one line, and a warning line when the latency is noisy."""
    line = (
        f"MACs {human_count(measured.macs)} ({human_count(measured.nonzero_macs)} touch a nonzero weight), "
        f"size {human_bytes(measured.size.dense_bytes)} dense / {human_bytes(measured.size.sparse_bytes)} sparse"
    )
    latency = measured.latency
    if latency is None:
        return line
    note = timing_note(latency.rounds, latency.threads)
    line += f", latency {median_and_spread(latency.median_ms, latency.iqr_ms)} ms ({note})"
    return f"{line}\n{noisy_latency_warning(latency.spread)}" if latency.noisy else line
