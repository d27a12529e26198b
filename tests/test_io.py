"""Pruned model directories: sparse format, atomic writes, manifest, structure hooks, reloading."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

import secateurs as sc
from secateurs.sources import load_model, load_pruned
from secateurs.storage import (
    ModelDirectoryError,
    OutputExistsError,
    WriteError,
    atomic,
    atomic_file,
    cache_dir,
    decode_state_dict,
    encode_state_dict,
    read_manifest,
    read_weights,
    save_pruned,
    write_weights,
)
from secateurs.storage.manifest import MANIFEST

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    build.input_shape = (2, 16)
    """
)


@pytest.fixture()
def spec(tmp_path) -> str:
    path = tmp_path / "factory_models.py"
    path.write_text(FACTORY)
    return f"python:{path}:build"


def leftovers(parent) -> list[str]:
    return sorted(name for name in os.listdir(parent) if name.startswith("."))


def test_sparse_round_trip_is_exact_for_every_dtype() -> None:
    torch.manual_seed(0)
    state = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        tensor = torch.randn(13, 7).to(dtype)
        tensor[torch.rand(13, 7) < 0.6] = 0
        state[f"w_{dtype}".replace("torch.", "")] = tensor
    state["zeros"] = torch.zeros(9, 9)
    state["empty"] = torch.zeros(0, 3)
    state["scalar"] = torch.tensor(2.5)
    state["count"] = torch.tensor(17, dtype=torch.int64)
    state["transposed"] = torch.randn(6, 5).t()  # non-contiguous
    tensors, metadata = encode_state_dict(state, "sparse")
    assert "w_float32::bitmask" in tensors and "zeros::values" in tensors
    assert "count" in tensors and "scalar" in tensors  # not worth it, or not floating point: dense
    decoded = decode_state_dict(tensors, metadata)
    assert decoded.keys() == state.keys()
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.dtype and torch.equal(decoded[name], tensor), name


def test_files_are_plain_safetensors_and_tied_weights_are_stored_once(tmp_path) -> None:
    shared = torch.randn(8, 8)
    shared[:, ::2] = 0
    state = {"embed.weight": shared, "head.weight": shared, "bias": torch.ones(8)}
    for fmt in ("dense", "sparse"):
        path = tmp_path / f"{fmt}.safetensors"
        size = write_weights(state, path, fmt)
        assert size == path.stat().st_size
        with safetensors.safe_open(str(path), framework="pt") as handle:  # any safetensors reader opens it
            names = set(handle.keys())
            assert json.loads(handle.metadata()["secateurs.aliases"]) == {"head.weight": "embed.weight"}
        assert not any(name.startswith("head.weight") for name in names)
        loaded = read_weights(path)
        assert torch.equal(loaded["head.weight"], shared) and torch.equal(loaded["embed.weight"], shared)


def test_corrupt_sparse_file_is_refused(tmp_path) -> None:
    tensors, metadata = encode_state_dict({"w": torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0])}, "sparse")
    tensors["w::values"] = tensors["w::values"][:1]
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelDirectoryError, match="corrupt"):
        read_weights(path)


def test_save_and_load_round_trip_with_masks(tmp_path, spec) -> None:
    loaded = load_model(spec)
    sc.prune(loaded.model, 0.5, seed=0)
    expected = loaded.run()
    out = tmp_path / "pruned"
    saved = save_pruned(
        loaded.model,
        out,
        source=loaded.spec,
        input_shape=loaded.input_shape,
        task=loaded.task,
        pruning=[{"method": "magnitude", "amount": 0.5}],
    )
    assert sorted(os.listdir(out)) == ["manifest.json", "masks.safetensors", "model.sparse.safetensors"]
    assert saved.files["model.sparse.safetensors"] == (out / "model.sparse.safetensors").stat().st_size
    manifest = read_manifest(out)
    assert manifest.source.spec == loaded.spec and manifest.source.input_shape == [2, 16]
    assert manifest.secateurs_version == sc.__version__ and manifest.pruning[0]["amount"] == 0.5
    assert manifest.structure == {}

    again = load_pruned(out)
    assert again.directory == out and again.manifest is not None
    assert sc.is_pruned(again.model)
    assert torch.equal(again.run(), expected)
    for (name, a), b in zip(loaded.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # pruning the reloaded model keeps the earlier zeros (masks came back)
    before = {k: v.clone() for k, v in again.model.state_dict().items()}
    sc.prune(again.model, 0.7)
    for name, tensor in again.model.state_dict().items():
        assert bool(((before[name] == 0) <= (tensor == 0)).all()), name
    assert load_pruned(out, restore_masks=False).model is not None


def test_dense_and_both_formats(tmp_path, spec) -> None:
    model = load_model(spec).model
    save_pruned(model, tmp_path / "dense", source=spec, weights_format="dense")
    assert sorted(os.listdir(tmp_path / "dense")) == ["manifest.json", "model.safetensors"]
    save_pruned(model, tmp_path / "both", source=spec, weights_format="both")
    assert sorted(os.listdir(tmp_path / "both")) == ["manifest.json", "model.safetensors", "model.sparse.safetensors"]
    plain = safetensors.torch.load_file(str(tmp_path / "dense" / "model.safetensors"))
    assert plain.keys() == model.state_dict().keys()


def test_existing_directory_is_refused_unless_overwrite(tmp_path, spec) -> None:
    model = load_model(spec).model
    out = tmp_path / "out"
    save_pruned(model, out, source=spec)
    first = (out / MANIFEST).read_text()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_pruned(model, out, source=spec)
    assert (out / MANIFEST).read_text() == first
    save_pruned(model, out, source=spec, overwrite=True, extra={"second": True})
    assert read_manifest(out).extra == {"second": True}
    assert leftovers(tmp_path) == []

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(OutputExistsError, match="not a secateurs model directory"):
        save_pruned(model, foreign, source=spec, overwrite=True)
    assert (foreign / "holiday.jpg").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        save_pruned(model, tmp_path / "file", source=spec, overwrite=True)


def test_failure_half_way_leaves_nothing_behind(tmp_path, spec, monkeypatch) -> None:
    model = load_model(spec).model
    sc.prune(model, 0.5)
    calls = []

    def failing_finish(path):
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "_finish_file", failing_finish)
    with pytest.raises(WriteError, match="No space left on device"):
        save_pruned(model, tmp_path / "new", source=spec)
    assert calls and not (tmp_path / "new").exists() and leftovers(tmp_path) == []

    monkeypatch.undo()
    save_pruned(model, tmp_path / "kept", source=spec, extra={"version": 1})
    monkeypatch.setattr(atomic, "_finish_file", failing_finish)
    with pytest.raises(WriteError):
        save_pruned(model, tmp_path / "kept", source=spec, overwrite=True, extra={"version": 2})
    assert read_manifest(tmp_path / "kept").extra == {"version": 1}  # the old directory survives
    assert leftovers(tmp_path) == []


def test_atomic_file_replaces_or_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "cache" / "thing.bin"
    with atomic_file(target) as temp:
        temp.write_bytes(b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_file(target) as temp:
        temp.write_bytes(b"two")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"one" and os.listdir(target.parent) == ["thing.bin"]


def test_shrunk_model_saves_and_loads_with_its_structure(tmp_path, spec) -> None:
    loaded = load_model(spec)
    model = loaded.model
    sc.shrink(model, loaded.example_inputs, 0.5)
    expected = loaded.run()
    out = tmp_path / "shrunk"
    save_pruned(model, out, source=spec, input_shape=(2, 16))
    assert read_manifest(out).structure["shrink"]["steps"]
    again = load_pruned(out)
    assert torch.equal(again.run(), expected)
    assert [p.shape for p in again.model.parameters()] == [p.shape for p in model.parameters()]


def test_weights_that_do_not_fit_are_explained(tmp_path, spec) -> None:
    model = load_model(spec).model
    model[2] = nn.Linear(32, 8)
    model[4] = nn.Linear(8, 4)
    save_pruned(model, tmp_path / "out", source=spec, input_shape=(2, 16))
    with pytest.raises(ModelDirectoryError, match="shape mismatch .* structure entry"):
        load_pruned(tmp_path / "out")


def test_bad_manifests(tmp_path) -> None:
    with pytest.raises(ModelDirectoryError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ModelDirectoryError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "secateurs-pruned-model", "format_version": 99}))
    with pytest.raises(ModelDirectoryError, match="upgrade secateurs"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "secateurs-pruned-model", "format_version": 1}))
    with pytest.raises(ModelDirectoryError, match="not a valid manifest"):
        read_manifest(tmp_path)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SECATEURS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "secateurs"
