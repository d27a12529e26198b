"""What can be pruned: a named parameter of a module, and which of its dimensions are outputs and inputs.

A :class:`Target` is the unit every other layer works on. Layer kinds differ in where their output
and input dimensions sit (``Linear``/``ConvNd`` weights are ``[out, in, ...]``; ``ConvTransposeNd`` and
Hugging Face's GPT-2 ``Conv1D`` are ``[in, out, ...]``), so ``"out"``/``"in"`` are resolved here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from secateurs.errors import PruningError

#: Layer types pruned by default: their weights map inputs to outputs.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_TYPES: tuple[type[nn.Module], ...] = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
EMBEDDING_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2): a Linear whose weight is stored as ``[in, out]``."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def is_linear_like(module: nn.Module) -> bool:
    """True for the layers secateurs prunes by default (Linear, ConvNd, HF Conv1D)."""
    return isinstance(module, LINEAR_TYPES) or is_hf_conv1d(module)


def is_norm_like(module: nn.Module) -> bool:
    """Normalisation layers, including the RMSNorm/LayerNorm classes models define for themselves."""
    if isinstance(module, NORM_TYPES):
        return True
    name = type(module).__name__.lower()
    return name.endswith("norm") or "layernorm" in name or "rmsnorm" in name or "batchnorm" in name


def io_dims(module: nn.Module, param: torch.Tensor) -> tuple[int, int]:
    """(output_dim, input_dim) of a weight tensor held by ``module``."""
    if param.dim() < 2:
        return 0, 0
    if isinstance(module, TRANSPOSED_TYPES) or is_hf_conv1d(module):
        return 1, 0
    return 0, 1


@dataclass(frozen=True)
class Target:
    """A parameter to prune: ``module.<param_name>``, known in the model as ``<module_name>.<param_name>``.

    ``aliases`` lists other (module_name, module) pairs holding the very same tensor (tied weights):
    they share one mask and are pruned once.
    """

    module_name: str
    param_name: str
    module: nn.Module = field(compare=False, repr=False)
    aliases: tuple[tuple[str, nn.Module], ...] = field(default=(), compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name

    @property
    def param(self) -> torch.Tensor:
        return getattr(self.module, self.param_name)

    @property
    def holders(self) -> tuple[tuple[str, nn.Module], ...]:
        """Every (module_name, module) that holds this parameter, this target's own first."""
        return ((self.module_name, self.module), *self.aliases)

    def dim(self, which: int | str) -> int:
        """Resolve ``"out"``/``"in"`` (or a possibly negative int) to a dimension index of the parameter."""
        param = self.param
        if isinstance(which, str):
            if which not in ("out", "in"):
                raise PruningError(f"unknown dimension {which!r} for {self.name}; use 'out', 'in' or an integer")
            if param.dim() < 2:
                raise PruningError(
                    f"{self.name} has shape {tuple(param.shape)}: 'out'/'in' need a weight of at least 2 dims"
                )
            out_dim, in_dim = io_dims(self.module, param)
            return out_dim if which == "out" else in_dim
        ndim = param.dim()
        if not -ndim <= which < ndim:
            raise PruningError(
                f"dimension {which} is out of range for {self.name} of shape {tuple(param.shape)}; "
                f"pick one in [{-ndim}, {ndim - 1}]"
            )
        return which % ndim
