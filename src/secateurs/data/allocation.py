"""How much to prune where: per-block sparsities, and which blocks matter least.

* **Uniform**: every block gets the target sparsity.
* **OWL** (outlier-weighted layerwise sparsity, Yin et al., 2024): LLM blocks differ in how many
  *outlier* Wanda scores they hold (scores above ``M`` times the block's mean). Blocks with more
  outliers are pruned less. Sparsities are an affine function of the outlier ratio, scaled so that
  they stay within ``±λ`` of the target and their parameter-weighted mean is exactly the target.
  Defaults are the paper's: ``M = 5``, ``λ = 0.08``.
* **Block influence** (Men et al., 2024, "ShortGPT"): ``1 − cos(x_in, x_out)`` averaged over tokens;
  a block that barely changes its input is the first candidate for depth pruning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from secateurs.errors import PruningError

OWL_M = 5.0
OWL_LAMBDA = 0.08


def outlier_ratio(scores: Iterable[torch.Tensor], m: float = OWL_M) -> float:
    """Fraction of the scores (pooled over all tensors) larger than ``m`` times their mean."""
    tensors = [s.detach().flatten().float() for s in scores]
    if not tensors:
        raise PruningError("outlier ratio of no scores: the block has nothing to prune")
    total = sum(t.sum() for t in tensors)
    count = sum(t.numel() for t in tensors)
    threshold = m * total / count
    return float(sum((t > threshold).sum() for t in tensors) / count)


def owl_sparsities(
    outlier_ratios: Sequence[float],
    target: float,
    lam: float = OWL_LAMBDA,
    sizes: Sequence[int] | None = None,
) -> list[float]:
    """Per-block sparsities: more outliers, less sparsity; within ``±λ`` of ``target``; weighted mean = target.

    ``sizes`` (parameters per block) weight the mean so the whole model reaches ``target``. ``λ`` is
    narrowed when ``target ± λ`` would leave [0, 1].
    """
    if not 0.0 <= target <= 1.0:
        raise PruningError(f"target sparsity must be in [0, 1], got {target}")
    if lam < 0:
        raise PruningError(f"OWL's lambda must be >= 0, got {lam}")
    ratios = torch.tensor(list(outlier_ratios), dtype=torch.float64)
    if ratios.numel() == 0:
        return []
    weights = torch.ones_like(ratios) if sizes is None else torch.tensor(list(sizes), dtype=torch.float64)
    if weights.shape != ratios.shape or (weights <= 0).any():
        raise PruningError("sizes must give one positive parameter count per block")
    deviation = ratios - (ratios * weights).sum() / weights.sum()
    spread = deviation.abs().max()
    lam = min(lam, target, 1.0 - target)
    if spread <= 1e-9 * max(1.0, float(ratios.abs().max())) or lam == 0:  # equal up to rounding
        return [target] * ratios.numel()
    sparsities = target - deviation * (lam / spread)
    return [float(s) for s in sparsities.clamp(0.0, 1.0)]


class InfluenceMeter:
    """Accumulates ``cos(x_in, x_out)`` per token across batches; ``value`` is ``1 − mean``."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def __call__(self, hidden_in: torch.Tensor, hidden_out: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        cos = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
        if token_mask is not None and tuple(cos.shape) == tuple(token_mask.shape):
            cos = cos[token_mask.to(cos.device)]
        self.total += float(cos.sum())
        self.count += cos.numel()

    @property
    def value(self) -> float:
        if not self.count:
            raise PruningError("block influence saw no tokens")
        return 1.0 - self.total / self.count
