"""Criteria that read calibration data: Wanda, activation norms, first-order Taylor and block influence.

They are ordinary :class:`~secateurs.core.criteria.Criterion` classes registered by name, so the engine's
patterns (unstructured, N:M, rows/columns) and scopes apply to them unchanged. They hold the statistics
they read; :func:`secateurs.data.prune_with_data` gathers those block by block. Used directly::

    stats = secateurs.data.collect_input_statistics(model, calibration)
    secateurs.prune(model, 0.5, method="wanda", stats=stats, scope="row")
"""

from __future__ import annotations

import torch

from secateurs.core.criteria import Criterion, register_criterion, score_dtype
from secateurs.core.targets import Target
from secateurs.data.gradients import GradientStatistics
from secateurs.data.statistics import InputStatistics, input_shape_for
from secateurs.errors import PruningError


def _require(evidence: object, criterion: str) -> None:
    if evidence is None:
        raise PruningError(
            f"the {criterion} criterion reads calibration statistics and was given none; use "
            f"secateurs.prune_with_data(model, calibration, method={criterion!r}) or pass stats=..."
        )


class InputCriterion(Criterion):
    """A criterion that reads the statistics of each layer's inputs: one value per input feature,
    broadcast over the weights that read that feature.

    ``missing="zero"`` scores parameters the statistics cannot score (biases, norms, layers that saw no
    input) as zero instead of raising: in structural surgery a unit's score is then the sum over the
    members that can be scored.
    """

    scored_by = "all"  # a unit is also judged by the inputs its readers see

    def __init__(self, stats: InputStatistics | None = None, missing: str = "error") -> None:
        if missing not in ("error", "zero"):
            raise PruningError(f"missing must be 'error' or 'zero', got {missing!r}")
        self.stats = stats
        self.missing = missing

    def feature_values(self, stats: InputStatistics, target: Target) -> torch.Tensor:
        """One value per input feature of ``target``'s layer."""
        raise NotImplementedError

    def combine(self, param: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Each weight's score from its value and the (broadcastable) value of the feature it reads."""
        raise NotImplementedError

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        dtype = score_dtype(param)
        if self.missing == "zero" and (param.dim() < 2 or self.stats is None or target.module not in self.stats):
            return torch.zeros(param.shape, dtype=dtype, device=param.device)
        _require(self.stats, self.name)
        values = self.feature_values(self.stats, target).to(param.device)  # type: ignore[arg-type]
        features = input_shape_for(target.module, param, values, target.dim("in")).to(dtype)
        return self.combine(param.detach().to(dtype), features)


@register_criterion("wanda")
class Wanda(InputCriterion):
    """|W_ij| · ‖X_j‖₂ (Sun et al., 2023): a weight matters as much as it scales the input it reads.

    The paper compares weights within each output row (``scope="row"``); N:M compares within blocks.
    Groups (columns, rows) are scored by the sum of their members.
    """

    name = "wanda"

    def feature_values(self, stats: InputStatistics, target: Target) -> torch.Tensor:
        return stats.input_norm(target.module, target.name)

    def combine(self, param: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return param.abs() * features


@register_criterion("activation")
class Activation(InputCriterion):
    """Root-mean-square activation of the input feature each weight reads, whatever the weight's value.

    Meant for structured units: with ``Structured("in")`` on an MLP's down projection it ranks the MLP's
    neurons by how strongly they fire; summed over a head's columns of the attention output projection
    it ranks heads (``secateurs.shrink(..., granularity="head", method=Activation(stats,
    missing="zero"))``). A group scores its mean.
    """

    name = "activation"

    def feature_values(self, stats: InputStatistics, target: Target) -> torch.Tensor:
        return stats.input_rms(target.module, target.name)

    def combine(self, param: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return features.expand(param.shape).clone()

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return scores.mean(dim=dims) if dims else scores


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


@register_criterion("block_influence", "influence")
class BlockInfluence(Criterion):
    """Depth pruning by block influence (1 − cos between a block's input and output hidden states, see
    :func:`secateurs.data.block_influence`): every weight of a block scores its block's influence, and a
    group scores the mean, so with ``secateurs.shrink(model, x, k, granularity="layer",
    method=BlockInfluence(influence))`` each block is ranked by exactly its influence."""

    name = "block_influence"
    #: Block scores are averaged, not summed: a block's score is its influence whatever its size.
    aggregate = "mean"

    def __init__(self, influence: dict[str, float] | None = None) -> None:
        self.influence = influence

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        if self.influence is None:
            raise PruningError(
                "block_influence needs the influence of each block: "
                "BlockInfluence(secateurs.data.block_influence(model, calibration))"
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
