"""2:4 sparsity on NVIDIA GPUs: Linear layers pruned 2:4 (``granularity="2:4"``) run torch's semi-structured
sparse kernels (``torch.sparse.to_sparse_semi_structured``), which skip the zeros in half precision.

The kernels exist only on CUDA devices of compute capability 8.0 or more (Ampere and later) and for
``float16``/``bfloat16`` weights; on a CPU torch refuses them for every dtype. :func:`semi_structured_support`
says why they cannot run here, before any work. :func:`to_semi_structured` converts a copy: the given model is
never changed. Layers that are not 2:4, or whose shape the kernels do not take, stay dense and are listed
with the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from secateurs.export.formats import UnsupportedFormatError
from secateurs.export.prepare import deployable_copy

HALF_DTYPES = (torch.float16, torch.bfloat16)
_MIN_CAPABILITY = (8, 0)


def semi_structured_support(device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16) -> str:
    """Why 2:4 kernels cannot run on ``device`` in ``dtype`` here, or '' when they can."""
    device = torch.device(device)
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    if dtype not in HALF_DTYPES:
        return f"2:4 kernels take float16 or bfloat16 weights, not {dtype}; pass dtype=torch.float16"
    if device.type != "cuda" or not torch.cuda.is_available():
        return "2:4 kernels run only on CUDA GPUs (torch refuses them on CPU); no CUDA device is available here"
    capability = torch.cuda.get_device_capability(device)
    if capability < _MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return f"2:4 kernels need compute capability 8.0 or more, {name} has {capability[0]}.{capability[1]}"
    return ""


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive weights along the input dimension holds at most 2 nonzeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.detach() != 0).reshape(weight.shape[0], -1, 4).sum(-1) <= 2).all())


@dataclass
class SemiStructured:
    """A copy of the model on the GPU in half precision, with ``converted`` Linear layers running 2:4 kernels;
    ``skipped`` maps the Linear layers left dense to the reason."""

    model: nn.Module
    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _convert(module: nn.Linear) -> str:
    """Swap the layer's weight for its semi-structured form; the reason when it cannot be, else ''."""
    if not is_two_four(module.weight):
        return "not 2:4 sparse"
    try:
        sparse = torch.sparse.to_sparse_semi_structured(module.weight.detach())
    except (RuntimeError, ValueError) as exc:
        return str(exc).splitlines()[0]
    module.weight = nn.Parameter(sparse, requires_grad=False)
    return ""


def to_semi_structured(
    model: nn.Module, *, device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16
) -> SemiStructured:
    """A copy of ``model`` on ``device`` in ``dtype`` (masks folded in) whose 2:4-pruned Linear layers run torch's
    semi-structured sparse kernels; for inference. Raises :class:`UnsupportedFormatError` where they cannot run."""
    reason = semi_structured_support(device, dtype)
    if reason:
        raise UnsupportedFormatError(f"cannot use 2:4 kernels: {reason}")
    result = SemiStructured(deployable_copy(model).to(device=device, dtype=dtype))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The PyTorch API of SparseSemiStructuredTensor is in prototype")
        for name, module in result.model.named_modules():
            if isinstance(module, nn.Linear):
                why = _convert(module)
                if why:
                    result.skipped[name] = why
                else:
                    result.converted.append(name)
    if not result.converted:
        raise UnsupportedFormatError(
            "no Linear layer could take 2:4 kernels (prune with granularity='2:4' first); "
            f"for example {next(iter(result.skipped.items()), ('none', 'no Linear layers'))}"
        )
    return result
