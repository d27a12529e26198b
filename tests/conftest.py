"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def one_thread():
    """One intra-op thread: the tests run two at a time on two cores, and small models train faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def transformers(monkeypatch):
    """The transformers package, offline (skips the test where it is not installed)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers")
