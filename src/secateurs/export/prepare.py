"""What every format starts from: a deployable copy of the model, its example inputs taken apart, and the
comparison of an exported file's outputs with the model's.

The copy has its pruning folded in (``weight * mask``: the zeros stay, the masks, their hooks and any
parametrization go), so nothing of secateurs is left in it and the user's model is never touched.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.export import Dim
from torch.nn.utils import parametrize

from secateurs.core.masks import finalize
from secateurs.export.formats import ExportError
from secateurs.runtime import Inputs, call_model, inference

#: Largest difference between a float export's outputs and PyTorch's, relative to the largest output (at least 1).
RELATIVE_BOUND = 1e-4


def deployable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the CPU in eval mode, pruning masks folded into the weights and parametrizations
    removed (their current values kept): an ordinary model with nothing of secateurs left in it."""
    folded = copy.deepcopy(model).to("cpu")
    finalize(folded)
    for module in folded.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return folded.eval()


@contextlib.contextmanager
def without_cache(model: nn.Module) -> Iterator[nn.Module]:
    """A Hugging Face model without its key/value cache for the duration: a traced graph takes the inputs
    and returns the outputs, not a cache object (``config.use_cache`` comes back as it was)."""
    config = getattr(model, "config", None)
    used = getattr(config, "use_cache", None)
    if used:
        config.use_cache = False
    try:
        yield model
    finally:
        if used:
            config.use_cache = used


def split_inputs(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of the forward pass, as :func:`secateurs.runtime.call_model` makes them."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def call_text(callee: str, inputs: Inputs) -> str:
    """How the loaded file is called, for the manifest: with keyword inputs as the model was, else positional."""
    return f"{callee}(**inputs)  # inputs: {{name: tensor}}" if isinstance(inputs, Mapping) else f"{callee}(*inputs)"


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors of nested outputs or inputs (tuples, dicts, Hugging Face outputs), in pytree order."""
    return [leaf for leaf in pytree.tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def reference_outputs(model: nn.Module, inputs: Inputs) -> Any:
    """The model's outputs on ``inputs``: what every exported file is compared with."""
    with inference(model), without_cache(model):
        return call_model(model, inputs)


def widened(inputs: Inputs) -> Inputs:
    """The inputs with a batch of 2 where every tensor has a batch of 1, so that tracing keeps the batch size
    free (a size of 1 is fixed by the tracer); other inputs unchanged."""
    tensors = tensor_leaves(inputs)
    if not tensors or any(t.dim() == 0 or t.shape[0] != 1 for t in tensors):
        return inputs
    return pytree.tree_map(lambda t: torch.cat([t, t]) if isinstance(t, torch.Tensor) else t, inputs)


def _free_dims(tensor: Any) -> dict[int, Any] | None:
    """Dimensions traced as free: the batch, and the sequence of 2-D integer inputs (token ids, masks)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
        return None
    dims = {0: Dim.AUTO}
    if tensor.dim() == 2 and not tensor.is_floating_point():
        dims[1] = Dim.AUTO
    return dims


def dynamic_shapes(model: nn.Module, inputs: Inputs) -> dict[str, Any]:
    """``torch.export``'s ``dynamic_shapes`` for ``inputs``, keyed by the forward pass's parameter names.
    ``Dim.AUTO`` lets the tracer keep a size fixed where the model needs it so."""
    args, kwargs = split_inputs(inputs)
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {name: pytree.tree_map(_free_dims, value) for name, value in bound.items()}


def _path_name(path: tuple[Any, ...]) -> str:
    """``last_hidden_state`` for the pytree path of an output tensor (a dict key, attribute or index, joined)."""
    parts = []
    for entry in path:
        attr = next((a for a in ("key", "name", "idx") if hasattr(entry, a)), None)
        if attr is not None:
            parts.append(str(getattr(entry, attr)))
    return "_".join(parts)


def output_names(outputs: Any) -> list[str]:
    """A name for every output tensor: its key in a dict or Hugging Face output, else ``output`` (numbered)."""
    paths = [path for path, leaf in pytree.tree_flatten_with_path(outputs)[0] if isinstance(leaf, torch.Tensor)]
    names = [_path_name(path) for path in paths]
    if len(set(names)) == len(names) and all(name and name[0].isalpha() for name in names):
        return names
    return ["output"] if len(paths) == 1 else [f"output_{index}" for index in range(len(paths))]


def max_abs_diff(reference: Any, candidate: Any) -> tuple[float, float]:
    """Largest absolute difference between two sets of outputs, and the largest absolute reference output."""
    expected, found = tensor_leaves(reference), tensor_leaves(candidate)
    if len(expected) != len(found):
        raise ExportError(f"the exported model returns {len(found)} tensors where the model returns {len(expected)}")
    diff, scale = 0.0, 0.0
    for want, got in zip(expected, found):
        if tuple(want.shape) != tuple(got.shape):
            raise ExportError(
                f"an exported output has shape {tuple(got.shape)} where the model's has {tuple(want.shape)}"
            )
        want, got = want.detach().double(), got.detach().double().to(want.device)
        if want.numel():
            diff = max(diff, float((want - got).abs().max()))
            scale = max(scale, float(want.abs().max()))
    return diff, scale


def float_bound(scale: float) -> float:
    """The largest difference accepted from a float32 export: :data:`RELATIVE_BOUND` of the output scale
    (taken as at least 1)."""
    return RELATIVE_BOUND * max(1.0, scale)
