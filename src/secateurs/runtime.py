"""Running a model: where it lives, how to call it on example inputs, inference mode and thread count.

Every layer calls models the same way, so these helpers are defined once, here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

#: Example inputs: positional arguments, or keyword arguments for models such as Hugging Face's.
Inputs = tuple[Any, ...] | Mapping[str, Any]


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple or list, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def move_to(inputs: Any, device: str | torch.device, non_blocking: bool = False) -> Any:
    """Tensors in (nested tuples, lists and dicts of) inputs moved to ``device``; other values kept.
    ``non_blocking`` overlaps host-to-device copies with compute (training batches)."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=non_blocking)
    if isinstance(inputs, Mapping):
        return {key: move_to(value, device, non_blocking) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move_to(value, device, non_blocking) for value in inputs)
    return inputs


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; afterwards every module's own train/eval flag comes back as found (a model
    may hold frozen submodules in eval mode while it trains, which ``model.train(was)`` would undo)."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`eval_mode` and no autograd for the duration."""
    with eval_mode(model), torch.no_grad():
        yield model


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` intra-op threads (``None``: leave as is); the previous setting comes back after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def watch_inputs(model: nn.Module, inputs: Any, record: Mapping[nn.Module, Any]) -> None:
    """One inference pass of ``model`` on ``inputs`` with ``record[module](module, args, kwargs)`` called before
    each call of the modules named; the hooks are removed however the pass ends."""
    handles = [module.register_forward_pre_hook(hook, with_kwargs=True) for module, hook in record.items()]
    try:
        with inference(model):
            call_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
