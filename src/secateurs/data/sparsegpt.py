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
    """Upper-triangular ``U`` with ``Uᵀ U = (H + λ·mean(diag H)·I)⁻¹``, written over ``hessian``.

    With ``J`` the order-reversing permutation and ``J H J = L Lᵀ`` (lower Cholesky), ``R = J L J`` is
    upper triangular with ``H = R Rᵀ``, so ``H⁻¹ = (R⁻¹)ᵀ R⁻¹`` and ``U = R⁻¹``: one factorisation and
    one triangular inverse, no explicit ``H⁻¹``. Damping is raised tenfold, up to three times, if the
    damped Hessian is still not positive definite. Two d×d matrices at most are alive (at d = 11008 each
    is 485 MB): the damped copy, and ``hessian``'s memory, which receives ``L``, then ``I`` and ``U``.
    """
    mean_diag = hessian.diagonal().mean().clamp(min=torch.finfo(hessian.dtype).tiny)
    damped = hessian.flip(0, 1)
    undamped = damped.diagonal().clone()
    lower = hessian.T  # column-major, the layout LAPACK writes: no copy on the way out
    info = torch.empty((), dtype=torch.int32, device=hessian.device)
    for attempt in range(4):
        damped.diagonal().copy_(undamped + damping * 10**attempt * mean_diag)
        torch.linalg.cholesky_ex(damped, out=(lower, info))
        if not info:
            del damped
            upper = lower.flip(0, 1)
            identity = hessian.zero_().fill_diagonal_(1.0).T
            return torch.linalg.solve_triangular(upper, identity, upper=True, out=identity)
    raise PruningError(
        "the layer's Hessian is not positive definite even with damping; use more calibration data "
        "or a larger damping"
    )


def _prune_columns(
    columns: torch.Tensor,
    allowed: torch.Tensor,
    U_block: torch.Tensor,
    sparsity: float | None,
    n_m: tuple[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block of columns, left to right: choose what to drop, zero it and move the error onto the
    block's remaining columns. ``columns`` (``[width, out]``: each weight column is a contiguous row, so the
    per-column updates read and write whole cache lines) is updated in place. Returns the scaled errors
    (for the lazy update of the columns to the right) and the drop mask, both ``[width, out]``."""
    width = columns.shape[0]
    d = U_block.diagonal()
    errors = torch.empty_like(columns)
    drop = ~allowed
    if sparsity is not None:
        k = round(columns.numel() * sparsity)
        if k:  # ranked in [out, width] order, so that ties go the same way whatever the layout
            saliency = (columns.T.square() / d.square()).masked_fill(drop.T, -1.0).flatten()
            lowest = torch.topk(saliency, k, largest=False, sorted=False).indices
            drop[lowest % width, lowest // width] = True
    for j in range(width):
        if n_m is not None and j % n_m[1] == 0:
            _drop_in_group(columns[j : j + n_m[1]], drop[j : j + n_m[1]], d[j : j + n_m[1]], n_m)
        w = columns[j]
        q = w.masked_fill(drop[j], 0.0)
        err = (w - q) / d[j]
        columns[j:].addr_(U_block[j, j:], err, alpha=-1.0)
        columns[j] = q  # equal up to rounding; keeps pruned entries exactly zero
        errors[j] = err
    return errors, drop


def _drop_in_group(columns: torch.Tensor, drop: torch.Tensor, d: torch.Tensor, n_m: tuple[int, int]) -> None:
    """N:M: mark in ``drop`` the ``m - n`` lowest-saliency weights of each row among these ``m`` columns."""
    n, m = n_m
    group = (columns.T.square() / d.square()).masked_fill(drop.T, -1.0)
    lowest = torch.topk(group, m - n, dim=1, largest=False).indices
    drop.T.scatter_(1, lowest, True)


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    damping: float = 0.01,
    keep: torch.Tensor | None = None,
    overwrite_hessian: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` (``[out, in]``) given ``hessian`` (``[in, in]``); returns ``(new_weight, keep_mask)``.

    Exactly one of ``sparsity`` (fraction of each column block to remove) or ``n_m`` (keep ``n`` of
    every ``m`` consecutive inputs in each row). ``keep`` marks weights still allowed (False = already
    pruned: they are removed first and count towards the sparsity). ``damping`` is λ, added to the
    Hessian's diagonal as a fraction of its mean (the paper's 1%); ``block_size`` is the paper's 128.
    ``overwrite_hessian=True`` lets the solver work in the Hessian's memory (its content is garbage after)
    instead of a copy: one d×d matrix fewer. Computation is in float32 (float64 stays float64); the
    result has the input's dtype.
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
    # Transposed ([in, out]): a column of the weight is a contiguous row.
    columns = weight.detach().T.to(work_dtype, memory_format=torch.contiguous_format, copy=True)
    H = hessian.detach().to(
        columns.device, work_dtype, memory_format=torch.contiguous_format, copy=not overwrite_hessian
    )
    allowed = torch.ones_like(columns, dtype=torch.bool) if keep is None else keep.to(columns.device).T.contiguous()

    # Inputs that never fired carry no information: their weights can go at no cost.
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    columns[dead] = 0.0

    U = _inverse_hessian_factor(H, damping)
    drop = torch.empty_like(allowed)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        # Hundreds of small operations per block: on CPU, extra threads only add synchronisation (9 to 24
        # times slower with 2 threads than 1 on a busy 2-core machine). The lazy update keeps them all.
        with torch_threads(1 if columns.device.type == "cpu" else None):
            errors, drop[start:end] = _prune_columns(
                columns[start:end], allowed[start:end], U[start:end, start:end], sparsity, n_m
            )
        columns[end:].addmm_(U[start:end, end:].T, errors, alpha=-1.0)  # the "lazy" update of the columns to the right
    return columns.T.to(weight.dtype), ~drop.T


def prune_layer(
    target: Target,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    n_m: tuple[int, int] | None = None,
    block_size: int = 128,
    damping: float = 0.01,
    overwrite_hessian: bool = False,
) -> torch.Tensor:
    """Run :func:`sparsegpt` on ``target`` (a Linear or HF Conv1D weight), write the reconstructed
    weights and hold the mask like any other prune. Returns the keep-mask in the parameter's layout.
    ``overwrite_hessian`` as in :func:`sparsegpt`."""
    module, param = target.module, target.param
    if param.dim() != 2:
        raise PruningError(f"SparseGPT handles 2-D linear weights; {target.name} has shape {tuple(param.shape)}")
    transposed = target.dim("out") == 1  # HF Conv1D stores [in, out]
    weight = param.detach().T if transposed else param.detach()
    prior = get_mask(module, target.param_name)
    if prior is not None and transposed:
        prior = prior.T
    new_weight, keep = sparsegpt(
        weight, hessian, sparsity=sparsity, n_m=n_m, block_size=block_size, damping=damping, keep=prior,
        overwrite_hessian=overwrite_hessian,
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
