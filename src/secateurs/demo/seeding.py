"""Seeding without side effects: the demo is deterministic for a seed, and calling it leaves the caller's
random streams exactly where they were."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def global_generators_kept() -> Iterator[None]:
    """Code inside may seed Python's, NumPy's and torch's (CPU) global generators; all three are restored on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
