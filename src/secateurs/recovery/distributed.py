"""Masks under ``torch.distributed``: one decision, every rank.

DistributedDataParallel keeps weights identical across ranks (same start, all-reduced gradients), so a
deterministic criterion already gives the same masks everywhere. Ties, random criteria and
non-deterministic kernels can still split them, and a single differing mask is silent corruption, so
after every pruning event rank ``src``'s masks *and* the masked weights are broadcast to all ranks.
Gradients of pruned weights are zeroed by a tensor hook before DDP's all-reduce sees them.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist
from torch import nn

from secateurs.core.masks import masked_parameters, pack_mask, set_mask


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _broadcast(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """Broadcast through a tensor on the backend's device (gloo: CPU, nccl: CUDA)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buffer = tensor.detach().to(device).contiguous()
    dist.broadcast(buffer, src=src)
    return buffer.to(tensor.device)


def sync_masks(model: nn.Module, src: int = 0) -> int:
    """Give every rank the masks and masked weights of rank ``src``; returns how many masks were sent.

    Every rank must hold masks on the same parameters (call it after pruning on every rank).
    """
    if not is_distributed():
        return 0
    model = unwrap(model)
    count = 0
    for name, module, param_name, mask in list(masked_parameters(model)):
        keep = _broadcast(mask.to(torch.uint8), src).to(torch.bool)
        param = module._parameters[param_name]
        with torch.no_grad():
            param.copy_(_broadcast(param, src))
        set_mask(module, param_name, keep)
        count += 1
    return count


def mask_digest(model: nn.Module) -> str:
    """SHA-256 of all masks (names, shapes, bits): equal digests mean equal masks."""
    digest = hashlib.sha256()
    for name, _module, _param, mask in masked_parameters(unwrap(model)):
        digest.update(f"{name}:{tuple(mask.shape)}:".encode())
        digest.update(pack_mask(mask).cpu().numpy().tobytes())
    return digest.hexdigest()


def masks_agree(model: nn.Module) -> bool:
    """True when every rank holds the same masks (always True outside torch.distributed)."""
    if not is_distributed():
        return True
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, mask_digest(model))
    return len(set(digests)) == 1
