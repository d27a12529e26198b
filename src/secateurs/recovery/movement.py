"""Movement pruning (Sanh et al., 2020): keep the weights that training pushes away from zero.

The importance of a weight is ``S = -sum_t W_t * dL/dW_t`` over the training steps seen so far: a weight
growing in magnitude has ``W`` and ``-grad`` of the same sign and scores high, one shrinking towards zero
scores low, whatever its current size. The score needs training, so it is a criterion with state:

    tracker = track_movement(model)          # starts accumulating at every optimizer step
    ...train...                              # any torch.optim optimizer, DDP included
    prune(model, 0.5, method="movement")     # ranks by the accumulated scores

Scores are accumulated in a global optimizer *pre*-step hook: the gradient there is the one the
optimizer uses (after DDP's all-reduce, after ``GradScaler`` unscaling, summed over accumulation
micro-batches) and ``W`` is the weight before the update, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.weak import WeakIdKeyDictionary

from secateurs.core.criteria import Criterion, register_criterion, score_dtype
from secateurs.core.selection import select
from secateurs.core.targets import Target
from secateurs.errors import PruningError

#: parameter -> its accumulated movement score; keyed by identity, never keeps a parameter alive.
_SCORES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _accumulate(params: Iterable[torch.Tensor]) -> None:
    with torch.no_grad():
        for param in params:
            score = _SCORES.get(param)
            if score is not None and param.grad is not None:
                score.sub_(param.detach().to(score.dtype) * param.grad.to(score.dtype))


def _before_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    if len(_SCORES):
        _accumulate(p for group in optimizer.param_groups for p in group["params"])


_STEP_HOOK = register_optimizer_step_pre_hook(_before_step)


class MovementTracker:
    """Which parameters of a model accumulate movement scores; a handle to read, save or stop them."""

    def __init__(self, model: nn.Module, targets: Iterable[Target]) -> None:
        self.model = model
        self.names: list[str] = []
        for target in targets:
            param = target.param
            if param not in _SCORES:
                _SCORES[param] = torch.zeros(param.shape, dtype=score_dtype(param), device=param.device)
            self.names.append(target.name)

    def _param(self, name: str) -> torch.Tensor:
        return self.model.get_parameter(name)

    def scores(self) -> dict[str, torch.Tensor]:
        """Accumulated scores by qualified parameter name (live tensors, not copies)."""
        return {name: _SCORES[self._param(name)] for name in self.names if self._param(name) in _SCORES}

    def update(self) -> None:
        """Accumulate once from the current gradients, for loops that update weights without torch.optim."""
        _accumulate(self._param(name) for name in self.names)

    def reset(self) -> None:
        for score in self.scores().values():
            score.zero_()

    def stop(self) -> None:
        """Stop accumulating and forget the scores."""
        for name in self.names:
            _SCORES.pop(self._param(name), None)
        self.names = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: score.clone() for name, score in self.scores().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, saved in state.items():
            param = self._param(name)
            if tuple(saved.shape) != tuple(param.shape):
                raise PruningError(
                    f"movement scores for {name} have shape {tuple(saved.shape)}, the parameter "
                    f"{tuple(param.shape)}; load them into the model they were saved from"
                )
            _SCORES[param] = saved.to(device=param.device, dtype=score_dtype(param)).clone()
            if name not in self.names:
                self.names.append(name)


def track_movement(model: nn.Module, **selection: object) -> MovementTracker:
    """Start accumulating movement scores for the parameters :func:`secateurs.select` picks
    (same ``include``/``exclude``/``types``/... options). Returns the tracker."""
    return MovementTracker(model, select(model, **selection).targets)  # type: ignore[arg-type]


def movement_scores(param: torch.Tensor) -> torch.Tensor | None:
    """The accumulated score tensor of ``param``, or None when it is not tracked."""
    return _SCORES.get(param)


@register_criterion("movement")
class Movement(Criterion):
    """Score = accumulated ``-W * grad`` (see :func:`track_movement`). Groups sum their members' scores."""

    name = "movement"

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        scores = _SCORES.get(target.param)
        if scores is None:
            raise PruningError(
                f"no movement scores for {target.name}: movement pruning needs training first. Call "
                "secateurs.recovery.track_movement(model) and train before pruning, or use a "
                "PruningController with method='movement' and a schedule that starts after some training"
            )
        if scores.shape != param.shape:
            raise PruningError(f"movement scores for {target.name} no longer match its shape; track it again")
        return scores.detach().clone()
