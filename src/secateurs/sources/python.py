"""``python:MODULE:FACTORY``: ``FACTORY()`` from an importable module or a ``.py`` file, returning an
``nn.Module`` (example inputs from ``--input-shape`` or attributes it sets) or a whole :class:`LoadedModel`."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import MissingDependencyError, ModelSpecError
from secateurs.runtime import Inputs
from secateurs.sources.model import LoadedModel, Shape, parse_input_shape, random_input
from secateurs.sources.registry import register_source


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """Let ``python:MODULE`` find modules in the working directory (as ``python -m`` would), for the
    import and the factory call only; ``sys.path`` is restored afterwards."""
    cwd = str(Path.cwd())
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_file(name: str, spec: str) -> tuple[Any, str]:
    """Import a ``.py`` file under a name unique to its path; returns it and its resolved path."""
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise ModelSpecError(f"{spec}: no such file {path}")
    unique = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    module_spec = importlib.util.spec_from_file_location(f"_secateurs_factory_{path.stem}_{unique}", path)
    if module_spec is None or module_spec.loader is None:
        raise ModelSpecError(f"{spec}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module, str(path)


def _import_module(name: str, spec: str) -> tuple[Any, str]:
    """Import a dotted module (the working directory is searched too) or a ``.py`` file; returns it and its
    canonical name."""
    if name.endswith(".py") or "/" in name or "\\" in name:
        return _import_file(name, spec)
    try:
        return importlib.import_module(name), name
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ModelSpecError(
                f"{spec}: cannot import module {name!r} "
                "(not on the Python path; run from its directory or give a .py file)"
            ) from None
        raise MissingDependencyError(
            f"{spec}: importing {name!r} needs the package {exc.name!r}, which is not installed"
        ) from None


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
    module_name, _, factory_name = argument.rpartition(":")
    if not module_name or not factory_name:
        raise ModelSpecError(f"{spec}: write python:MODULE:FACTORY, e.g. python:mypackage.models:build")
    with _working_directory_importable():
        module, canonical = _import_module(module_name, spec)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise ModelSpecError(f"{spec}: module {module_name!r} has no callable {factory_name!r}")
        result = factory()
    return result, factory, module, f"python:{canonical}:{factory_name}"


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
