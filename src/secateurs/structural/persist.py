"""Save and load shrunk models without pickle.

Every :func:`~secateurs.structural.shrink` appends a *step* to the model's structure record: the new
shapes of the tensors and the new attribute values of every module it changed, the layers it removed,
and the Hugging Face config fields it updated. :func:`apply_structure` replays the steps on a freshly
built instance of the original architecture (empty tensors of the recorded shapes), after which the
saved weights load with ``load_state_dict(strict=True)``.

On disk this is the ``structure["shrink"]`` entry of a model directory's manifest
(:func:`secateurs.save_pruned` writes it, :func:`secateurs.load_pruned` replays it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.errors import PruningError

KIND = "shrink"
VERSION = 1
_RECORD = "_secateurs_structure"


def _encode(value: Any) -> Any:
    if isinstance(value, torch.Size | tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise PruningError(f"cannot record attribute value {value!r} of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(_decode(v) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _qualname(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def record_structure(model: nn.Module, attrs: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any],
                     removed: Sequence[str] = ()) -> dict[str, Any]:
    """One step: shapes of every tensor held by the changed modules, the attributes set, the removals."""
    named = dict(model.named_modules(remove_duplicate=False))
    modules = {}
    for name in sorted(attrs):
        module = named[name]
        tensors = {}
        for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
            for attr, tensor in table.items():
                if tensor is not None and (kind == "param" or attr not in module._non_persistent_buffers_set):
                    tensors[attr] = {"kind": kind, "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
        modules[name] = {
            "class": _qualname(module),
            "tensors": tensors,
            "attrs": {k: _encode(v) for k, v in attrs[name].items()},
        }
    step = {"modules": modules, "config": {k: _encode(v) for k, v in config.items()}, "removed": list(removed)}
    return step


def append_step(model: nn.Module, step: dict[str, Any]) -> None:
    """Remember a step on the model itself, so several shrinks in a row save as one record."""
    steps = list(getattr(model, _RECORD, []))
    steps.append(step)
    object.__setattr__(model, _RECORD, steps)


def structure_of(model: nn.Module) -> dict[str, Any]:
    """The ``structure["shrink"]`` payload for :func:`secateurs.save_pruned` (empty when never shrunk)."""
    steps = getattr(model, _RECORD, [])
    return {"version": VERSION, "steps": list(steps)} if steps else {}


def _remove(model: nn.Module, path: str) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, (nn.ModuleList, nn.Sequential)) or child not in parent._modules:
        raise PruningError(f"structure record removes {path!r}, which the rebuilt model does not hold in a Sequential/ModuleList")
    if all(k.isdigit() for k in parent._modules):
        del parent[list(parent._modules).index(child)]  # renumbers, as the removal did
    else:
        del parent._modules[child]


def _set_config(model: nn.Module, field: str, value: Any) -> None:
    config = getattr(model, "config", None)
    if config is None:
        raise PruningError(f"the structure record sets config field {field!r} but the rebuilt model has no config")
    setattr(config, field, value)


def apply_structure(model: nn.Module, payload: Mapping[str, Any]) -> None:
    """Reshape a freshly built model as recorded, so the saved weights fit (values are left uninitialised)."""
    if not payload:
        return
    if payload.get("version") != VERSION:
        raise PruningError(f"structure record version {payload.get('version')!r} is not supported (expected {VERSION})")
    for step in payload["steps"]:
        for path in step.get("removed", []):
            _remove(model, path)
        named = dict(model.named_modules(remove_duplicate=False))
        holders: dict[int, list[tuple[nn.Module, str]]] = {}
        for module in named.values():
            for attr, param in module._parameters.items():
                if param is not None:
                    holders.setdefault(id(param), []).append((module, attr))
        replaced: dict[int, nn.Parameter] = {}
        for name, entry in step["modules"].items():
            module = named.get(name)
            if module is None or _qualname(module) != entry["class"]:
                found = "nothing" if module is None else _qualname(module)
                raise PruningError(f"structure record expects {entry['class']} at {name!r}, the rebuilt model has {found}")
            for attr, spec in entry["tensors"].items():
                old = (module._parameters if spec["kind"] == "param" else module._buffers).get(attr)
                if old is None:
                    raise PruningError(f"structure record expects {name}.{attr}, which the rebuilt model lacks")
                if list(old.shape) == spec["shape"]:
                    continue
                data = torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), device=old.device)
                if spec["kind"] == "param":
                    if id(old) not in replaced:
                        replaced[id(old)] = nn.Parameter(data, requires_grad=old.requires_grad)
                    for holder, holder_attr in holders[id(old)]:  # tied parameters stay tied
                        holder._parameters[holder_attr] = replaced[id(old)]
                else:
                    module._buffers[attr] = data
            for attr, value in entry["attrs"].items():
                setattr(module, attr, _decode(value))
        for field, value in step.get("config", {}).items():
            _set_config(model, field, _decode(value))
    object.__setattr__(model, _RECORD, list(payload["steps"]))  # a later shrink extends this record


