"""BatchNorm recalibration: :func:`recalibrate_batchnorm`, the cheapest recovery after removing channels.

    sc.shrink(model, x, 0.5)
    recalibrate_batchnorm(model, (x_train, y_train))        # no gradient, no weight changes

A BatchNorm layer normalises with the mean and variance it recorded on the dense model. Removing channels
upstream changes what reaches it, so those statistics no longer describe its inputs, and a network whose
weights are still good can fall to chance. Re-estimating them with forward passes over some training
samples (adaptive BatchNorm, as EagleEye evaluates pruned candidates) restores much of the accuracy before any
fine-tuning, and makes one-shot comparisons of pruned models meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from secateurs.errors import PruningError
from secateurs.recovery.loop import Data, as_dataset, batches, loader_settings, split_batch
from secateurs.runtime import call_model, model_device, move_to

#: Training samples read by default: enough for stable means and variances, a few forward passes.
RECALIBRATION_SAMPLES = 1024


def recalibrate_batchnorm(
    model: nn.Module,
    data: Data,
    *,
    num_samples: int = RECALIBRATION_SAMPLES,
    batch_size: int = 64,
    seed: int = 0,
) -> int:
    """Replace the running mean and variance of every BatchNorm layer of ``model`` by those of its inputs on
    ``num_samples`` samples of ``data`` (a Dataset, a DataLoader or a tuple of tensors; labels are ignored),
    drawn at random with ``seed``. Weights, masks and train flags are left as they were; other layers run in eval
    mode meanwhile (no dropout noise in the statistics); a failure part-way restores the old statistics. Returns
    the number of BatchNorm layers recalibrated; a model without any that keeps running statistics is refused
    rather than left as it was in silence."""
    norms = [module for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats]
    if not norms:
        raise PruningError(f"{type(model).__name__} has no BatchNorm layer that keeps running statistics: there is "
                           "nothing to recalibrate")
    if not (isinstance(num_samples, int) and num_samples >= 2 and isinstance(batch_size, int) and batch_size >= 2):
        raise PruningError(f"num_samples={num_samples!r}, batch_size={batch_size!r}: give whole numbers, 2 or more "
                           "(a variance needs two samples)")
    dataset = as_dataset(data)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_samples].tolist()
    if len(order) < 2:
        raise PruningError(f"data holds {len(order)} sample: give 2 or more to estimate a variance")
    if len(order) % batch_size == 1:  # a last batch of one sample has no variance: BatchNorm refuses it
        order = order[:-1]
    saved = _save(model, norms)
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over every batch, not an exponential one
            norm.train()
        device = model_device(model)
        with torch.no_grad():
            for batch in batches(dataset, order, batch_size, loader_settings(data)):
                call_model(model, move_to(_inputs(batch), device))
    except BaseException:
        _restore_statistics(norms, saved.statistics)
        raise
    finally:
        _restore(model, norms, saved)
    return len(norms)


def _inputs(batch: object) -> object:
    """The inputs of a batch: ``(x,)``, ``x``, ``(x, y)`` or a dict with labels (dropped)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 1:
        return batch[0]
    return split_batch(batch)[0]


@dataclass
class _Saved:
    """What recalibration changes besides the statistics it is asked for, and those statistics, for a failure."""

    training: dict[nn.Module, bool]
    momenta: list[float | None]
    statistics: list[dict[str, torch.Tensor]]


def _save(model: nn.Module, norms: list[nn.Module]) -> _Saved:
    statistics = [{name: buffer.clone() for name, buffer in norm.named_buffers(recurse=False) if buffer is not None}
                  for norm in norms]  # fmt: skip
    return _Saved({module: module.training for module in model.modules()}, [norm.momentum for norm in norms], statistics)


def _restore_statistics(norms: list[nn.Module], statistics: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for norm, buffers in zip(norms, statistics):
            for name, value in buffers.items():
                getattr(norm, name).copy_(value)


def _restore(model: nn.Module, norms: list[nn.Module], saved: _Saved) -> None:
    for module, training in saved.training.items():
        module.training = training
    for norm, momentum in zip(norms, saved.momenta):
        norm.momentum = momentum
