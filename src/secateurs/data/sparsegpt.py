"""SparseGPT (Frantar & Alistarh, 2023): prune a layer and reconstruct it from its inputs' Hessian.

Removing weights from a linear layer changes its output on the calibration inputs ``X``. Given the
Hessian ``H = X Xᵀ / n`` of the layer-wise squared error, the Optimal Brain Surgeon result says that
zeroing weight ``w_q`` of a row is best compensated by moving the rest of that row by
``-(w_q / [H⁻¹]_qq) · H⁻¹[q, :]``, at a loss increase of ``w_q² / [H⁻¹]_qq``. SparseGPT applies this
column by column, left to right: once a column is final, the inverse Hessian of the remaining columns
is the next row of the upper Cholesky factor of ``H⁻¹``, so one factorisation serves every row and
every column. Which weights to drop is decided for a block of columns at a time (the lowest
``w² / [H⁻¹]_qq`` in the block, or the lowest ``m - n`` of each group of ``m`` for N:M) using the
weights as already updated by earlier columns; updates to columns right of the current block are
batched into one matrix product per block ("lazy" updates).

:func:`sparsegpt` is the whole algorithm on one weight matrix; :func:`prune_layer` is the glue that
writes the result into a module and holds the mask with :func:`secateurs.core.masks.set_mask`.
"""

from __future__ import annotations

import torch
from torch import nn

from secateurs.core.masks import get_mask, set_mask
from secateurs.core.targets import Target, is_hf_conv1d
from secateurs.errors import PruningError
from secateurs.runtime import torch_threads


def _inverse_hessian_factor(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper-triangular ``U`` with ``Uᵀ U = (H + λ·mean(diag H)·I)⁻¹``.

    With ``J`` the order-reversing permutation and ``J H J = L Lᵀ`` (lower Cholesky), ``R = J L J`` is
    upper triangular with ``H = R Rᵀ``, so ``H⁻¹ = (R⁻¹)ᵀ R⁻¹`` and ``U = R⁻¹``: one factorisation and
    one triangular inverse, no explicit ``H⁻¹``. Damping is raised tenfold, up to three times, if the
    damped Hessian is still not positive definite.
    """
    mean_diag = hessian.diagonal().mean().clamp(min=torch.finfo(hessian.dtype).tiny)
    reversed_hessian = hessian.flip(0, 1)
    identity = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(4):
        damped = reversed_hessian + (damping * 10**attempt * mean_diag) * identity
        lower, info = torch.linalg.cholesky_ex(damped)
        if not info:
            upper = lower.flip(0, 1)
            return torch.linalg.solve_triangular(upper, identity, upper=True)
    raise PruningError(
        "the layer's Hessian is not positive definite even with damping; use more calibration data "
        "or a larger damping"
    )


def _prune_columns(
    block: torch.Tensor,
    block_allowed: torch.Tensor,
    U_block: torch.Tensor,
    sparsity: float | None,
    n_m: tuple[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block of columns, left to right: choose what to drop, zero it and move the error onto the
    block's remaining columns. Returns the updated block, the scaled errors (for the lazy update of the
    columns to the right) and the drop mask."""
    d = U_block.diagonal()
    errors = torch.zeros_like(block)
    drop = torch.zeros_like(block, dtype=torch.bool)
    if sparsity is not None:
        saliency = (block.square() / d.square()).masked_fill(~block_allowed, -1.0)
        k = round(saliency.numel() * sparsity)
        if k:
            lowest = torch.topk(saliency.flatten(), k, largest=False).indices
            drop.view(-1)[lowest] = True
        drop |= ~block_allowed
    for j in range(block.shape[1]):
        if n_m is not None and j % n_m[1] == 0:
            n, m = n_m
            group = (block[:, j : j + m].square() / d[j : j + m].square()).masked_fill(
                ~block_allowed[:, j : j + m], -1.0
            )
            lowest = torch.topk(group, m - n, dim=1, largest=False).indices
            drop[:, j : j + m].scatter_(1, lowest, True)
            drop[:, j : j + m] |= ~block_allowed[:, j : j + m]
        w = block[:, j]
        q = w.masked_fill(drop[:, j], 0.0)
        err = (w - q) / d[j]
        block[:, j:].addr_(err, U_block[j, j:], alpha=-1.0)
        block[:, j] = q  # equal up to rounding; keeps pruned entries exactly zero
        errors[:, j] = err
    return block, errors, drop


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    damping: float = 0.01,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (``[out, in]``) given ``hessian`` (``[in, in]``); returns ``(new_weight, keep_mask)``.

    Exactly one of ``sparsity`` (fraction of each column block to remove) or ``n_m`` (keep ``n`` of
    every ``m`` consecutive inputs in each row). ``keep`` marks weights still allowed (False = already
    pruned: they are removed first and count towards the sparsity). ``damping`` is λ, added to the
    Hessian's diagonal as a fraction of its mean (the paper's 1%); ``block_size`` is the paper's 128.
    Computation is in float32 (float64 stays float64); the result has the input's dtype.
    """
    if (sparsity is None) == (n_m is None):
        raise PruningError("give exactly one of sparsity= (unstructured) or n_m=(n, m)")
    cols = weight.shape[1]
    if hessian.shape != (cols, cols):
        raise PruningError(f"Hessian of shape {tuple(hessian.shape)} does not fit a weight with {cols} inputs")
    if n_m is not None:
        n, m = n_m
        if not 0 <= n < m or cols % m:
            raise PruningError(f"{n}:{m} needs 0 <= n < m and {cols} inputs divisible by m")
        if block_size % m:
            block_size = max(m, block_size - block_size % m)
    elif not 0.0 <= sparsity <= 1.0:  # type: ignore[operator]
        raise PruningError(f"sparsity must be in [0, 1], got {sparsity}")

    work_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    W = weight.detach().to(work_dtype).clone(memory_format=torch.contiguous_format)
    H = hessian.detach().to(device=W.device, dtype=work_dtype).clone(memory_format=torch.contiguous_format)
    allowed = torch.ones_like(W, dtype=torch.bool) if keep is None else keep.to(W.device).contiguous()

    # Inputs that never fired carry no information: their weights can go at no cost.
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    U = _inverse_hessian_factor(H, damping)
    mask = torch.ones_like(allowed)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        # Hundreds of small operations per block: on CPU, extra threads only add synchronisation (9 to 24
        # times slower with 2 threads than 1 on a busy 2-core machine). The lazy update keeps them all.
        with torch_threads(1 if W.device.type == "cpu" else None):
            block, errors, drop = _prune_columns(
                W[:, start:end].clone(), allowed[:, start:end], U[start:end, start:end], sparsity, n_m
            )
        W[:, start:end] = block
        W[:, end:].sub_(errors @ U[start:end, end:])  # the "lazy" update of every column to the right
        mask[:, start:end] = ~drop
    return W.to(weight.dtype), mask


def prune_layer(
    target: Target,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    damping: float = 0.01,
) -> torch.Tensor:
    """Run :func:`sparsegpt` on ``target`` (a Linear or HF Conv1D weight), write the reconstructed
    weights and hold the mask like any other prune. Returns the keep-mask in the parameter's layout."""
    module, param = target.module, target.param
    if param.dim() != 2:
        raise PruningError(f"SparseGPT handles 2-D linear weights; {target.name} has shape {tuple(param.shape)}")
    transposed = target.dim("out") == 1  # HF Conv1D stores [in, out]
    weight = param.detach().T if transposed else param.detach()
    prior = get_mask(module, target.param_name)
    if prior is not None and transposed:
        prior = prior.T
    new_weight, keep = sparsegpt(
        weight, hessian, sparsity=sparsity, n_m=n_m, block_size=block_size, damping=damping, keep=prior
    )
    if transposed:
        new_weight, keep = new_weight.T, keep.T
    keep = keep.contiguous()
    with torch.no_grad():
        param.copy_(new_weight)
    for _, holder in target.holders:
        set_mask(holder, target.param_name, keep)
    return keep


def is_supported(module: nn.Module) -> bool:
    """SparseGPT works on layers whose weight is one matrix applied to feature vectors."""
    return isinstance(module, nn.Linear) or is_hf_conv1d(module)
