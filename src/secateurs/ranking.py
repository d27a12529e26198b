"""Choose the k lowest-scoring entries across many tensors without concatenating them.

Ranking a whole model at once (global pruning) the obvious way copies every score into one vector and
sorts it: about as much extra memory as the model, several times over. Here the exact k-th smallest
score is found in two streaming passes, chunk by chunk:

1. a fixed-seed random sample brackets the k-th value between two sample quantiles ``lo`` and ``hi``;
2. one pass counts the scores below ``lo``, equal to either end, and keeps only the few strictly inside
   the bracket, whose sort gives the exact threshold ``t``; a miss (vanishingly rare) widens the bracket;
3. a final pass writes the keep-masks: ``score > t`` is kept.

Ties at ``t`` are broken deterministically: equal scores are pruned in source order, then by flat
index, until exactly ``k`` are pruned. Extra memory is one chunk plus the bracket's contents, whatever
the number or size of the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

CHUNK = 1 << 20
SAMPLE_SIZE = 1 << 18
_INF = float("inf")


class ScoreSource:
    """Flat scores of one tensor, produced on demand (possibly more than once, always identically)."""

    numel: int

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(offset, scores)`` for consecutive flat slices."""
        raise NotImplementedError


class TensorScores(ScoreSource):
    """Scores held in, or computed into, one tensor."""

    def __init__(self, scores: torch.Tensor | Callable[[], torch.Tensor], numel: int | None = None) -> None:
        self._scores = scores
        self.numel = scores.numel() if isinstance(scores, torch.Tensor) else int(numel)  # type: ignore[arg-type]

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        scores = self._scores if isinstance(self._scores, torch.Tensor) else self._scores()
        flat = scores.reshape(-1)
        for start in range(0, flat.numel(), CHUNK):
            yield start, flat[start : start + CHUNK]


class StreamedScores(ScoreSource):
    """Scores computed chunk by chunk from a tensor's values by a pointwise function (e.g. ``abs``)."""

    def __init__(self, values: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._values = values.detach().reshape(-1)
        self._fn = fn
        self.numel = self._values.numel()

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.numel, CHUNK):
            yield start, self._fn(self._values[start : start + CHUNK])


def _eligible_chunks(
    sources: Sequence[ScoreSource], keeps: Sequence[torch.Tensor]
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Scores with already-pruned entries set to +inf, so they are never chosen again."""
    for index, (source, keep) in enumerate(zip(sources, keeps)):
        for start, scores in source.chunks():
            keep_chunk = keep[start : start + scores.numel()]
            yield index, start, torch.where(keep_chunk, scores, _INF)


def _sample(sources, keeps, eligible: int, size: int) -> torch.Tensor:
    """About ``size`` eligible scores drawn at fixed-seed random positions (all of them when few), sorted."""
    generator = torch.Generator().manual_seed(0)
    picks = []
    for _, _, scores in _eligible_chunks(sources, keeps):
        if eligible <= size:
            picked = scores
        else:
            count = min(scores.numel(), math.ceil(size * scores.numel() / eligible))
            positions = torch.randint(0, scores.numel(), (count,), generator=generator).to(scores.device)
            picked = scores[positions]
        picks.append(picked[torch.isfinite(picked)].to("cpu", torch.float64))
    return torch.sort(torch.cat(picks)).values if picks else torch.empty(0, dtype=torch.float64)


def _threshold(
    sources, keeps, k: int, eligible: int, sample: torch.Tensor, exact: bool
) -> tuple[float, int, int]:
    """The k-th smallest eligible score ``t``, with how many scores are below it and how many equal it."""
    n = sample.numel()
    if exact:
        t = sample[k - 1].item()
        return t, int(torch.count_nonzero(sample < t)), int(torch.count_nonzero(sample == t))
    if n == 0:
        lo, hi = -_INF, _INF
    else:
        q = k / eligible
        margin = 4.0 * math.sqrt(max(q * (1 - q), 1.0 / n) / n) + 4.0 / n
        lo_at, hi_at = math.floor((q - margin) * n), math.ceil((q + margin) * n)
        lo = sample[lo_at].item() if lo_at >= 0 else -_INF
        hi = sample[hi_at].item() if hi_at < n else _INF
    for _attempt in range(4):
        below = at_lo = at_hi = 0
        inside = []
        for _, _, scores in _eligible_chunks(sources, keeps):
            if lo > -_INF:
                below += int(torch.count_nonzero(scores < lo))
                at_lo += int(torch.count_nonzero(scores == lo))
            if hi < _INF and hi != lo:
                at_hi += int(torch.count_nonzero(scores == hi))
            between = scores[(scores > lo) & (scores < hi)]
            if between.numel():
                inside.append(between.to(torch.float64))
        if k <= below:
            lo = -_INF
            continue
        if k <= below + at_lo:
            return lo, below, at_lo
        values = torch.sort(torch.cat(inside)).values if inside else torch.empty(0, dtype=torch.float64)
        rank = k - below - at_lo
        if rank <= values.numel():
            t = values[rank - 1].item()
            less = int(torch.count_nonzero(values < t))
            return t, below + at_lo + less, int(torch.count_nonzero(values == t))
        if rank <= values.numel() + at_hi:
            return hi, below + at_lo + values.numel(), at_hi
        hi = _INF
    raise AssertionError("bracket search did not converge")  # unreachable: lo=-inf, hi=inf always brackets


def prune_lowest(sources: Sequence[ScoreSource], keeps: Sequence[torch.Tensor], k: int) -> None:
    """Set ``keeps[i]`` to False at the ``k`` lowest-scoring entries still kept, across all sources.

    ``keeps`` are flat bool tensors (True = kept), updated in place; entries already False are not
    eligible. ``k`` must not exceed the number of kept entries. Scores must be finite.
    """
    eligible = sum(int(torch.count_nonzero(keep)) for keep in keeps)
    if k < 0 or k > eligible:
        raise ValueError(f"cannot prune {k} of {eligible} remaining entries")
    if k == 0:
        return
    if k == eligible:
        for keep in keeps:
            keep.zero_()
        return
    sample = _sample(sources, keeps, eligible, SAMPLE_SIZE)
    t, below, ties = _threshold(sources, keeps, k, eligible, sample, exact=eligible <= SAMPLE_SIZE)
    ties_to_prune = k - below
    partial_ties = ties_to_prune < ties
    ties_seen = 0
    for index, start, scores in _eligible_chunks(sources, keeps):
        keep_chunk = keeps[index][start : start + scores.numel()]
        keep_chunk &= scores > t
        if partial_ties:
            equal = torch.nonzero(scores == t).squeeze(1)
            keep_chunk[equal[max(0, ties_to_prune - ties_seen) :]] = True
            ties_seen += equal.numel()
