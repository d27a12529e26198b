"""Gradient statistics for first-order Taylor importance: Σ over calibration batches of |W ⊙ ∂L/∂W|.

Gradients need a loss through the whole model, so unlike input statistics they come from full forward
and backward passes, not from the block-by-block walk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from secateurs.data.calibration import Batch, Calibration
from secateurs.errors import PruningError
from secateurs.runtime import eval_mode

LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class GradientStatistics:
    """Σ over calibration batches of |W ⊙ ∂L/∂W| for chosen parameters, keyed by the parameter object."""

    def __init__(self) -> None:
        self._sums: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.batches = 0

    def taylor(self, param: torch.Tensor, name: str = "") -> torch.Tensor:
        value = self._sums.get(param)
        if value is None:
            raise PruningError(f"no gradient statistics for {name or 'this parameter'}; was it part of the loss?")
        return value

    def add(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        term = (param.detach().float() * grad.detach().float()).abs_()
        previous = self._sums.get(param)
        self._sums[param] = term if previous is None else previous.add_(term)


def default_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The loss a model defines for itself: ``(x, y)`` batches get cross-entropy against ``y``;
    Hugging Face causal LMs get their next-token loss on the batch's own tokens."""
    if batch.target is not None:
        output = batch.run(model)
        logits = getattr(output, "logits", output)
        return nn.functional.cross_entropy(logits, batch.target)
    ids = batch.kwargs.get("input_ids")
    name = type(model).__name__
    if ids is not None and name.endswith(("ForCausalLM", "LMHeadModel")):
        return batch.run(model, labels=ids).loss
    raise PruningError(
        f"taylor needs a loss and {name} has none for these batches; pass loss_fn=lambda model, batch: ... "
        "(batch.run(model) calls the model) or calibrate with (input, target) pairs"
    )


def accumulate_gradients(
    model: nn.Module,
    calibration: Calibration,
    params: Iterable[torch.Tensor],
    loss_fn: LossFn | None = None,
) -> GradientStatistics:
    """Backpropagate the loss of each calibration batch and add up |W ⊙ ∂L/∂W| per batch.

    Only the chosen parameters get gradients (the rest are frozen for the duration), so the extra
    memory is one gradient per chosen parameter; their ``.grad`` are restored afterwards. Batches run
    in eval mode unless ``loss_fn`` switches modes itself; every module's mode is left as found.
    """
    loss_fn = loss_fn or default_loss
    stats = GradientStatistics()
    chosen = list({id(p): p for p in params}.values())
    with _gradients_into(stats, model, chosen), eval_mode(model):
        for batch in calibration:
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise PruningError("loss_fn must return a scalar tensor")
            loss.backward()
            stats.batches += 1
    return stats


@contextlib.contextmanager
def _gradients_into(stats: GradientStatistics, model: nn.Module, chosen: list[torch.Tensor]) -> Iterator[None]:
    """Freeze every parameter but ``chosen`` and add their gradients to ``stats`` as they arrive (one
    gradient held at a time); ``requires_grad`` and ``.grad`` are restored on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    saved_grads = [p.grad for p in chosen]
    handles = []

    def collect(param: torch.Tensor) -> None:
        stats.add(param, param.grad)
        param.grad = None

    try:
        for p in chosen:
            p.grad = None
        wanted = {id(p) for p in chosen}
        for p in model.parameters():
            p.requires_grad_(id(p) in wanted)
        for p in chosen:
            handles.append(p.register_post_accumulate_grad_hook(collect))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for p, grad in zip(chosen, saved_grads):
            p.grad = grad
