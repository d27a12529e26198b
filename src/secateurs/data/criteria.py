"""Criteria that read calibration data: Wanda, activation norms and first-order Taylor.

They are ordinary :class:`~secateurs.criteria.Criterion` classes registered by name, so the engine's
patterns (unstructured, N:M, rows/columns) and scopes apply to them unchanged. They hold the statistics
they read; :func:`secateurs.prune_with_data` gathers those block by block. Used directly::

    stats = secateurs.data_aware.collect_input_statistics(model, calibration)
    secateurs.prune(model, 0.5, method="wanda", stats=stats, scope="row")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from secateurs.core.criteria import Criterion, register_criterion, score_dtype
from secateurs.core.targets import Target
from secateurs.data.calibration import Batch, Calibration
from secateurs.data.statistics import InputStatistics, input_shape_for
from secateurs.errors import PruningError

LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def _check_missing(missing: str) -> str:
    if missing not in ("error", "zero"):
        raise PruningError(f"missing must be 'error' or 'zero', got {missing!r}")
    return missing


def _unscored(stats: InputStatistics | None, param: torch.Tensor, target: Target, missing: str) -> bool:
    """With ``missing="zero"``, parameters the statistics cannot score (biases, norms, layers that saw no
    input) score zero: in structural surgery a unit's score is then the sum over the members that can."""
    return missing == "zero" and (param.dim() < 2 or stats is None or target.module not in stats)


def _require(stats: object, criterion: str) -> None:
    if stats is None:
        raise PruningError(
            f"the {criterion} criterion reads calibration statistics and was given none; use "
            f"secateurs.prune_with_data(model, calibration, method={criterion!r}) or pass stats=..."
        )


@register_criterion("wanda")
class Wanda(Criterion):
    """|W_ij| · ‖X_j‖₂ (Sun et al., 2023): a weight matters as much as it scales the input it reads.

    The paper compares weights within each output row (``scope="row"``); N:M compares within blocks.
    Groups (columns, rows) are scored by the sum of their members. ``missing="zero"`` scores parameters
    without statistics as zero instead of raising (for structural groups that include biases and norms).
    """

    name = "wanda"

    scored_by = "all"  # a unit is also judged by the inputs its readers see

    def __init__(self, stats: InputStatistics | None = None, missing: str = "error") -> None:
        self.stats = stats
        self.missing = _check_missing(missing)

    def input_weights(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        _require(self.stats, self.name)
        norms = self.stats.input_norm(target.module, target.name)  # type: ignore[union-attr]
        return input_shape_for(target.module, param, norms.to(param.device), target.dim("in"))

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        if _unscored(self.stats, param, target, self.missing):
            return torch.zeros(param.shape, dtype=score_dtype(param), device=param.device)
        return param.detach().abs().to(score_dtype(param)) * self.input_weights(param, target).to(score_dtype(param))

    def __repr__(self) -> str:
        return "Wanda()"


@register_criterion("activation")
class Activation(Criterion):
    """Root-mean-square activation of the input feature each weight reads, whatever the weight's value.

    Meant for structured units: with ``Structured("in")`` on an MLP's down projection it ranks the MLP's
    neurons by how strongly they fire; summed over a head's columns of the attention output projection
    it ranks heads (``secateurs.structural.shrink(..., granularity="head", method=Activation(stats,
    missing="zero"))``). A group scores its mean; ``missing`` as for :class:`Wanda`.
    """

    name = "activation"

    scored_by = "all"  # a unit is also judged by the inputs its readers see

    def __init__(self, stats: InputStatistics | None = None, missing: str = "error") -> None:
        self.stats = stats
        self.missing = _check_missing(missing)

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        if _unscored(self.stats, param, target, self.missing):
            return torch.zeros(param.shape, dtype=score_dtype(param), device=param.device)
        _require(self.stats, self.name)
        rms = self.stats.input_rms(target.module, target.name)  # type: ignore[union-attr]
        values = input_shape_for(target.module, param, rms.to(param.device), target.dim("in"))
        return values.to(score_dtype(param)).expand(param.shape).clone()

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return scores.mean(dim=dims) if dims else scores

    def __repr__(self) -> str:
        return "Activation()"


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
    if ids is not None and (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
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
    memory is one gradient per chosen parameter; their ``.grad`` are restored afterwards. The
    model's train/eval state is left as found;
    batches run in eval mode unless ``loss_fn`` switches modes itself.
    """
    loss_fn = loss_fn or default_loss
    stats = GradientStatistics()
    chosen = {id(p): p for p in params}
    flags = {p: p.requires_grad for p in model.parameters()}
    saved_grads = {id(p): p.grad for p in chosen.values()}
    was_training = model.training
    handles = []
    try:
        for p in chosen.values():
            p.grad = None
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        for p in chosen.values():
            handles.append(p.register_post_accumulate_grad_hook(_collector(stats)))
        model.eval()
        for batch in calibration:
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise PruningError("loss_fn must return a scalar tensor")
            loss.backward()
            stats.batches += 1
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for p in chosen.values():
            p.grad = saved_grads[id(p)]
        model.train(was_training)
    return stats


def _collector(stats: GradientStatistics) -> Callable[[torch.Tensor], None]:
    def collect(param: torch.Tensor) -> None:
        stats.add(param, param.grad)
        param.grad = None

    return collect


@register_criterion("taylor")
class Taylor(Criterion):
    """First-order Taylor importance |w · ∂L/∂w|, summed over calibration batches: the estimated change
    in the loss if the weight were set to zero (Molchanov et al., 2019). Needs a loss."""

    name = "taylor"

    def __init__(self, gradients: GradientStatistics | None = None) -> None:
        self.gradients = gradients

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        _require(self.gradients, self.name)
        return self.gradients.taylor(target.param, target.name).to(device=param.device, dtype=score_dtype(param))  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return "Taylor()"


@register_criterion("block_influence", "influence")
class BlockInfluence(Criterion):
    """Depth pruning by block influence (1 − cos between a block's input and output hidden states, see
    :func:`secateurs.data_aware.block_influence`): every weight of a block scores its block's influence,
    and a group scores the mean, so with ``secateurs.structural.shrink(model, x, k, granularity="layer",
    method=BlockInfluence(influence), aggregate="mean")`` each block is ranked by exactly its influence."""

    name = "block_influence"

    def __init__(self, influence: dict[str, float] | None = None) -> None:
        self.influence = influence

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        if self.influence is None:
            raise PruningError(
                "block_influence needs the influence of each block: BlockInfluence(secateurs.data_aware."
                "block_influence(model, calibration))"
            )
        names = [n for n in self.influence if target.module_name == n or target.module_name.startswith(n + ".")]
        if not names:
            raise PruningError(
                f"{target.name} lies in no block with a measured influence (blocks: {', '.join(list(self.influence)[:4])}); "
                "measure block_influence on the same model object"
            )
        value = self.influence[max(names, key=len)]
        return torch.full(param.shape, value, dtype=score_dtype(param), device=param.device)

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return scores.mean(dim=dims) if dims else scores

    def __repr__(self) -> str:
        return "BlockInfluence()"
