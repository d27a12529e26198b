"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from secateurs.measure import flushing_denormals


@pytest.fixture(autouse=True)
def denormal_setting_untouched():
    """Fail a test that leaves its thread flushing denormals (or no longer flushing): the setting outlives the test
    and changes the numbers, and hypothesis' float strategies, of every later test in the same worker."""
    before = flushing_denormals()
    yield
    after = flushing_denormals()
    torch.set_flush_denormal(before)
    state = {True: "on", False: "off"}
    assert after == before, f"the test left denormal flushing {state[after]} (it was {state[before]})"


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


@pytest.fixture()
def demo_cache(tmp_path, monkeypatch):
    """The demo CNN in the cache, untrained: loading it is instant, and these tests check behaviour, not accuracy."""
    pytest.importorskip("sklearn")
    import safetensors.torch

    from secateurs.demo import build_model, load_dataset
    from secateurs.demo.model import TrainConfig, _cache_path

    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    path = _cache_path("digits", TrainConfig())
    path.parent.mkdir(parents=True)
    model = build_model(load_dataset("digits"))
    safetensors.torch.save_file(model.state_dict(), str(path), metadata={"accuracy": "0.1", "train_seconds": "0"})
    return tmp_path
