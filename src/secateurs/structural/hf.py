"""Hugging Face models: keep ``model.config`` in step with the shrunk modules.

After surgery the per-layer sizes are read back from the modules (attention heads, kv heads, head size,
MLP width, hidden size, number of layers). A size that is the same in every layer is written to the
config, so ``save_pretrained`` writes a config that ``from_pretrained`` accepts. Whether that config
really rebuilds the model is checked by building the architecture from it on the meta device and
comparing every tensor shape; when it does not (sizes differ between layers, or the architecture derives
the head size as ``hidden_size / num_heads``), a warning says to save with
:func:`secateurs.save_pruned` instead, which records the shapes themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from secateurs.core.targets import is_hf_conv1d
from secateurs.structural.patchers import HEAD_ATTRS
from secateurs.structural.surgery import Undo

#: Module names (suffixes) of the first MLP projection in the families secateurs knows.
MLP_SUFFIXES = ("intermediate.dense", "mlp.gate_proj", "mlp.up_proj", "mlp.c_fc", "mlp.fc1", "mlp.dense_h_to_4h")


def is_hf_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "to_dict") and type(model).__module__.startswith("transformers")


def _width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if is_hf_conv1d(module):
        return module.weight.shape[1]
    return None


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def observed_sizes(model: nn.Module) -> dict[str, set[int]]:
    """Per config field, the values the modules now have (one per layer)."""
    seen: dict[str, set[int]] = {"num_attention_heads": set(), "num_key_value_heads": set(), "head_dim": set(),
                                 "intermediate_size": set(), "hidden_size": set()}
    for name, module in model.named_modules():
        head_dim = _int_attr(module, HEAD_ATTRS["head_dim"])
        q_proj, k_proj = getattr(module, "q_proj", None), getattr(module, "k_proj", None)
        heads = _int_attr(module, HEAD_ATTRS["heads"])
        if heads is None and head_dim and isinstance(q_proj, nn.Linear):
            heads = q_proj.out_features // head_dim
        kv = _int_attr(module, HEAD_ATTRS["kv_heads"])
        if kv is None and head_dim and isinstance(k_proj, nn.Linear):
            kv = k_proj.out_features // head_dim
        if heads is not None and head_dim is not None:
            seen["num_attention_heads"].add(heads)
            seen["head_dim"].add(head_dim)
            seen["num_key_value_heads"].add(kv if kv is not None else heads)
        if name.endswith(MLP_SUFFIXES) and _width(module) is not None:
            seen["intermediate_size"].add(_width(module))
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(embeddings, nn.Embedding):
        seen["hidden_size"].add(embeddings.embedding_dim)
    else:
        for name, module in model.named_modules():
            if name.endswith("patch_embeddings.projection") and isinstance(module, nn.Conv2d):
                seen["hidden_size"].add(module.out_channels)
    return seen


def _field(config: Any, name: str) -> str | None:
    """The config's own name for a field (``n_inner`` for GPT-2's MLP width), or None."""
    if name == "intermediate_size" and not hasattr(config, "intermediate_size") and hasattr(config, "n_inner"):
        return "n_inner"
    try:
        getattr(config, name)
    except AttributeError:
        return None
    return name


def update_config(model: nn.Module, undo: Undo) -> tuple[dict[str, Any], list[str]]:
    """Write uniform sizes into the config; returns (fields set, warnings)."""
    if not is_hf_model(model):
        return {}, []
    config = model.config
    changes: dict[str, Any] = {}
    warnings: list[str] = []
    for name, values in observed_sizes(model).items():
        field = _field(config, name)
        if field is None or not values:
            continue
        if len(values) > 1:
            warnings.append(f"layers now differ in {name} ({sorted(values)}); config.{field} left as it was")
            continue
        value = next(iter(values))
        if field == "head_dim" and getattr(config, "head_dim", None) is None:
            continue
        if getattr(config, field) != value:
            undo.set_attr(config, field, value)
            changes[field] = value
    mismatch = config_mismatch(model)
    if mismatch:
        warnings.append(
            f"config.json cannot describe the shrunk model ({mismatch}); save_pretrained/from_pretrained will not "
            "rebuild it: save with secateurs.save_pruned, which records the shapes"
        )
    return changes, warnings


def config_mismatch(model: nn.Module) -> str:
    """Build the architecture from ``model.config`` on the meta device; the first shape that differs, or ''."""
    try:
        with torch.device("meta"):
            fresh = type(model)(model.config)
    except Exception as exc:  # the config itself is inconsistent
        return f"the architecture cannot be built from it: {type(exc).__name__}: {exc}"
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    for key, tensor in model.state_dict().items():
        if key not in expected:
            return f"unexpected tensor {key}"
        if expected[key] != tuple(tensor.shape):
            return f"{key} is {tuple(tensor.shape)} but the config builds {expected[key]}"
    return ""
