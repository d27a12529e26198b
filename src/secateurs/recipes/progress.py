"""Progress for people at a terminal; pipes, logs and tests stay clean."""

from __future__ import annotations

import sys


def interactive() -> bool:
    """Whether a person watches stderr: progress is shown only then, so pipes and tests stay clean."""
    return sys.stderr.isatty()


def say(message: str) -> None:
    """Progress for people: one line on stderr, only at a terminal."""
    if interactive():
        print(f"secateurs: {message}", file=sys.stderr, flush=True)
