"""What the commands print: progress for people at a terminal, JSON, and the pieces of human-readable reports."""

from __future__ import annotations

import json
import sys
from typing import Any

from secateurs.measure import Measurements


def interactive() -> bool:
    """Whether a person watches stderr: progress is shown only then, so pipes and tests stay clean."""
    return sys.stderr.isatty()


def say(message: str) -> None:
    """Progress for people: one line on stderr, only at a terminal."""
    if interactive():
        print(f"secateurs: {message}", file=sys.stderr, flush=True)


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


def format_measurements(measured: Measurements) -> str:
    """MACs, size and latency of one model on one line."""
    latency = f", latency {measured.latency_ms:.2f} ms" if measured.latency_ms is not None else ""
    return (
        f"MACs {human_count(measured.macs)} ({human_count(measured.nonzero_macs)} touch a nonzero weight), "
        f"size {human_bytes(measured.size.dense_bytes)} dense / {human_bytes(measured.size.sparse_bytes)} sparse{latency}"
    )
