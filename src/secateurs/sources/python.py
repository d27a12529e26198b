"""``python:MODULE:FACTORY``: ``FACTORY()`` from an importable module or a ``.py`` file, returning an
``nn.Module`` (example inputs from ``--input-shape`` or attributes it sets) or a whole :class:`LoadedModel`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from secateurs.errors import ModelSpecError
from secateurs.runtime import Inputs
from secateurs.sources.model import LoadedModel, Shape, parse_input_shape, random_input
from secateurs.sources.registry import register_source
from secateurs.usercode import call_user, user_function


def _factory_inputs(
    factory: Any, model: nn.Module, module: Any, input_shape: Shape | None, spec: str
) -> tuple[Inputs, Shape | None]:
    """Example inputs from ``input_shape``, else ``example_inputs`` or an input shape set on the factory,
    the model or the module."""
    if input_shape is not None:
        return (random_input(input_shape),), input_shape
    for owner in (factory, model, module):
        inputs = getattr(owner, "example_inputs", None)
        if inputs is not None:
            if isinstance(inputs, torch.Tensor):
                return (inputs,), tuple(inputs.shape)
            return (tuple(inputs) if not isinstance(inputs, Mapping) else dict(inputs)), None
    for owner, attribute in ((factory, "input_shape"), (model, "input_shape"), (module, "INPUT_SHAPE")):
        shape = getattr(owner, attribute, None)
        if shape is not None:
            shape = parse_input_shape(shape)
            return (random_input(shape),), shape
    raise ModelSpecError(
        f"{spec}: no example input; give --input-shape (e.g. 1,3,224,224) or set input_shape on the factory "
        "or the model, INPUT_SHAPE in the module, or example_inputs"
    )


def _call_factory(argument: str, spec: str) -> tuple[Any, Any, Any, str]:
    """Import ``MODULE``, call its ``FACTORY``; returns the result, the factory, the module and the canonical spec."""
    factory, module, canonical = user_function(argument, spec, ModelSpecError, "python:mypackage.models:build")
    return call_user(factory, spec), factory, module, f"python:{canonical}"


@register_source(
    "python", "python:MODULE:FACTORY", "FACTORY() from a module or .py file; returns an nn.Module or a LoadedModel"
)
def load_python(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    result, factory, module, spec = _call_factory(argument, f"python:{argument}")
    if isinstance(result, LoadedModel):
        if input_shape is not None:
            result.example_inputs, result.input_shape = (random_input(input_shape),), input_shape
        result.spec = spec
        return result
    if not isinstance(result, nn.Module):
        raise ModelSpecError(f"{spec}: the factory returned a {type(result).__name__}, not an nn.Module or LoadedModel")
    inputs, shape = _factory_inputs(factory, result, module, input_shape, spec)
    task = getattr(factory, "task", None) or getattr(module, "TASK", None) or "custom"
    return LoadedModel(result, inputs, spec, task, shape)
