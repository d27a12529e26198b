"""Choose the k lowest-scoring entries across many tensors without concatenating them.

Ranking a whole model at once (global pruning) the obvious way copies every score into one vector and
sorts it: about as much extra memory as the model, several times over. Here the exact k-th smallest
score is found in two streaming passes, chunk by chunk:

1. a fixed-seed random sample (gathered at random positions, no pass over the data) brackets the
   k-th value between two sample quantiles ``lo`` and ``hi``;
2. one pass counts the scores below ``lo`` and keeps only the few inside the bracket, whose k-th
   value is the exact threshold ``t``; a miss (vanishingly rare) widens the bracket and counts again.
   When the sample shows many scores equal to ``lo`` or ``hi`` (heavy ties, e.g. weights already
   zero), those are counted rather than kept, so memory stays small;
3. a final pass writes the keep-masks: ``score > t`` is kept.

Ties at ``t`` are broken deterministically: equal scores are pruned in source order, then by flat
index, until exactly ``k`` are pruned. Extra memory is one chunk plus the bracket's contents (under
1% of the scores), whatever the number or size of the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch

#: Entries per chunk: small enough to stay in cache, large enough that Python overhead is negligible.
CHUNK = 1 << 16
#: Largest sample. The sample grows as eligible^(2/3), which balances its own memory against the
#: bracket's contents (they shrink as 1/sqrt(sample)); up to this many eligible scores are ranked exactly.
SAMPLE_SIZE = 1 << 20
_INF = float("inf")


class ScoreSource:
    """Flat scores of one tensor, produced on demand (possibly more than once, always identically)."""

    numel: int

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(offset, scores)`` for consecutive flat slices."""
        raise NotImplementedError

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        """Scores at the given flat positions (for sampling)."""
        raise NotImplementedError


class TensorScores(ScoreSource):
    """Scores held in, or computed into, one tensor."""

    def __init__(self, scores: torch.Tensor | Callable[[], torch.Tensor], numel: int | None = None) -> None:
        self._scores = scores
        self.numel = scores.numel() if isinstance(scores, torch.Tensor) else int(numel)  # type: ignore[arg-type]

    def _flat(self) -> torch.Tensor:
        scores = self._scores if isinstance(self._scores, torch.Tensor) else self._scores()
        return scores.reshape(-1)

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        flat = self._flat()
        for start in range(0, flat.numel(), CHUNK):
            yield start, flat[start : start + CHUNK]

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        return self._flat()[positions]


class StreamedScores(ScoreSource):
    """Scores computed chunk by chunk from a tensor's values by a pointwise function (e.g. ``abs``)."""

    def __init__(self, values: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._values = values.detach().reshape(-1)
        self._fn = fn
        self.numel = self._values.numel()

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.numel, CHUNK):
            yield start, self._fn(self._values[start : start + CHUNK])

    def at(self, positions: torch.Tensor) -> torch.Tensor:
        return self._fn(self._values[positions])


class _Pool:
    """The sources with their flat keep-masks; iterates over eligible scores (pruned ones read +inf)."""

    def __init__(self, sources: Sequence[ScoreSource], keeps: Sequence[torch.Tensor]) -> None:
        self.sources, self.keeps = sources, keeps
        self.kept = [int(torch.count_nonzero(keep)) for keep in keeps]
        self.eligible = sum(self.kept)

    def chunks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        for index, (source, keep) in enumerate(zip(self.sources, self.keeps)):
            if self.kept[index] == 0:
                continue
            full = self.kept[index] == keep.numel()
            for start, scores in source.chunks():
                if not full:
                    scores = torch.where(keep[start : start + scores.numel()], scores, _INF)
                yield index, start, scores


class _Collector:
    """Values gathered chunk by chunk into one growing buffer. Keeping many small tensors alive between
    freed chunk-sized temporaries fragments the heap: the process grows by ~30x what it keeps."""

    def __init__(self, capacity: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.buffer = torch.empty(max(capacity, 1024), dtype=dtype, device=device)
        self.size = 0

    def add(self, values: torch.Tensor) -> None:
        end = self.size + values.numel()
        if end > self.buffer.numel():
            grown = torch.empty(max(end, 2 * self.buffer.numel()), dtype=self.buffer.dtype, device=self.buffer.device)
            grown[: self.size] = self.buffer[: self.size]
            self.buffer = grown
        self.buffer[self.size : end] = values
        self.size = end

    def values(self) -> torch.Tensor:
        return self.buffer[: self.size]


def _sample(pool: _Pool, size: int) -> torch.Tensor:
    """About ``size`` eligible scores (all of them when few), as float64 on the CPU.

    Positions are drawn with a fixed seed and gathered directly; a source mostly pruned already is
    sampled chunk by chunk instead, so the drawn positions never outnumber its entries by much.
    """
    generator = torch.Generator().manual_seed(0)
    picks = _Collector(min(size, pool.eligible) + len(pool.sources) + 64, torch.float64)
    for index, (source, keep) in enumerate(zip(pool.sources, pool.keeps)):
        kept = pool.kept[index]
        if kept == 0:
            continue
        if pool.eligible <= size:
            want = kept
        else:
            want = math.ceil(size * kept / pool.eligible)
        draws = math.ceil(want * source.numel / kept)
        if pool.eligible <= size or draws > source.numel // 8:
            for start, scores in source.chunks():
                chosen = scores[keep[start : start + scores.numel()]]
                if pool.eligible > size and chosen.numel():
                    count = min(chosen.numel(), math.ceil(want * chosen.numel() / kept))
                    picked = torch.randint(0, chosen.numel(), (count,), generator=generator)
                    chosen = chosen[picked.to(chosen.device)]
                picks.add(chosen.to("cpu", torch.float64))
        else:
            positions = torch.randint(0, source.numel, (draws,), generator=generator).to(keep.device)
            picks.add(source.at(positions)[keep[positions]].to("cpu", torch.float64))
    sample = picks.values()
    if not bool(torch.isfinite(sample).all()):
        raise ValueError("scores must be finite")
    return sample


class _Threshold(NamedTuple):
    """The k-th smallest eligible score, how many scores are below it and how many equal it, and
    (when known) the chunks ``(source index, offset)`` holding those equal to it."""

    value: float
    below: int
    ties: int
    tie_chunks: set[tuple[int, int]] | None = None


def _select(values: torch.Tensor, rank: int) -> float:
    """The rank-th smallest of ``values`` (1-based). On the CPU an in-place partial sort of one copy
    (``torch.kthvalue`` would add an int64 index per value)."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return torch.kthvalue(values, rank).values.item()
    work = values.numpy().copy()
    work.partition(rank - 1)
    return float(work[rank - 1])


def _kth(values: torch.Tensor, rank: int) -> tuple[float, int, int]:
    """The rank-th smallest of ``values`` (1-based), how many are below it, how many equal it."""
    t = _select(values, rank)
    return t, int(torch.count_nonzero(values < t)), int(torch.count_nonzero(values == t))


def _bracket(sample: torch.Tensor, k: int, eligible: int, widen: float) -> tuple[float, float]:
    n = sample.numel()
    if n == 0 or widen == _INF:
        return -_INF, _INF
    q = k / eligible
    # three standard deviations of a sample quantile: a miss (about 1 in 400) costs one more pass
    margin = widen * (3.0 * math.sqrt(max(q * (1 - q), 1.0 / n) / n) + 4.0 / n)
    lo_at, hi_at = math.floor((q - margin) * n), math.ceil((q + margin) * n)
    lo = _select(sample, lo_at + 1) if lo_at >= 0 else -_INF
    hi = _select(sample, hi_at + 1) if hi_at < n else _INF
    return lo, hi


def _heavy_ties(sample: torch.Tensor, lo: float, hi: float) -> bool:
    """Whether the sample shows so many scores equal to ``lo`` or ``hi`` that keeping them would cost memory."""
    inside = int(torch.count_nonzero((sample > lo) & (sample < hi)))
    at_ends = int(torch.count_nonzero((sample == lo) | (sample == hi)))
    return at_ends > max(inside, 64)


def _threshold(pool: _Pool, k: int, sample: torch.Tensor, exact: bool) -> _Threshold:
    """The k-th smallest eligible score, found with as few passes over the scores as possible."""
    if exact:
        return _Threshold(*_kth(sample, k))
    for widen in (1.0, 4.0, 16.0, _INF):
        lo, hi = _bracket(sample, k, pool.eligible, widen)
        expected = int(torch.count_nonzero((sample >= lo) & (sample <= hi))) * pool.eligible // max(sample.numel(), 1)
        if _heavy_ties(sample, lo, hi):
            found = _count_open(pool, k, lo, hi, expected)
        else:
            found = _count_closed(pool, k, lo, hi, expected)
        if found is not None:
            return found
    raise AssertionError("bracket search did not converge")  # unreachable: (-inf, inf) always brackets


def _count_closed(pool: _Pool, k: int, lo: float, hi: float, expected: int) -> _Threshold | None:
    """One pass: count scores below ``lo``, keep those in ``[lo, hi]`` in order with how many each
    chunk gave (so the chunks holding ties at the threshold are known); None when it is outside."""
    below = 0
    inside = None
    chunks: list[tuple[int, int]] = []
    ends: list[int] = []
    for index, start, scores in pool.chunks():
        lower = scores < lo
        upper = scores <= hi if hi < _INF else scores < _INF  # +inf marks entries already pruned
        below += int(torch.count_nonzero(lower))
        inside = inside or _Collector(expected + expected // 4 + 4096, scores.dtype, scores.device)
        inside.add(scores[upper ^ lower])
        chunks.append((index, start))
        ends.append(inside.size)
    rank = k - below
    if inside is None or rank < 1 or rank > inside.size:
        return None
    values = inside.values()
    t, less, ties = _kth(values, rank)
    tied = torch.nonzero(values == t).squeeze(1).cpu()
    owners = torch.searchsorted(torch.tensor(ends), tied, right=True).unique().tolist()
    return _Threshold(t, below + less, ties, {chunks[i] for i in owners})


def _count_open(pool: _Pool, k: int, lo: float, hi: float, expected: int) -> _Threshold | None:
    """One pass: count scores below, at ``lo`` and at ``hi``; keep only those strictly between."""
    below = at_lo = at_hi = 0
    inside = None
    for _, _, scores in pool.chunks():
        lt_lo, le_lo = scores < lo, scores <= lo
        below += int(torch.count_nonzero(lt_lo))
        at_lo += int(torch.count_nonzero(le_lo)) - int(torch.count_nonzero(lt_lo))
        if hi != lo:
            lt_hi = scores < hi
            if hi < _INF:
                at_hi += int(torch.count_nonzero(scores <= hi)) - int(torch.count_nonzero(lt_hi))
            inside = inside or _Collector(expected // 4 + 4096, scores.dtype, scores.device)
            inside.add(scores[lt_hi ^ le_lo])
    if k <= below:
        return None
    if k <= below + at_lo:
        return _Threshold(lo, below, at_lo)
    values = inside.values() if inside is not None else torch.empty(0)
    rank = k - below - at_lo
    if rank <= values.numel():
        t, less, ties = _kth(values, rank)
        return _Threshold(t, below + at_lo + less, ties)
    if rank <= values.numel() + at_hi:
        return _Threshold(hi, below + at_lo + values.numel(), at_hi)
    return None


def prune_lowest(sources: Sequence[ScoreSource], keeps: Sequence[torch.Tensor], k: int) -> None:
    """Set ``keeps[i]`` to False at the ``k`` lowest-scoring entries still kept, across all sources.

    ``keeps`` are flat bool tensors (True = kept), updated in place; entries already False are not
    eligible. ``k`` must not exceed the number of kept entries. Scores must be finite.
    """
    pool = _Pool(sources, keeps)
    if k < 0 or k > pool.eligible:
        raise ValueError(f"cannot prune {k} of {pool.eligible} remaining entries")
    if k == 0:
        return
    if k == pool.eligible:
        for keep in keeps:
            keep.zero_()
        return
    size = min(SAMPLE_SIZE, max(SAMPLE_SIZE >> 4, round(pool.eligible ** (2 / 3))))
    sample = _sample(pool, size)
    found = _threshold(pool, k, sample, exact=pool.eligible <= size)
    t, ties_to_prune = found.value, k - found.below
    # ties at t are all pruned, then those past the first ties_to_prune (in order) kept again;
    # only chunks known to hold ties are searched for them
    partial = ties_to_prune < found.ties
    ties_seen = 0
    for index, (source, keep) in enumerate(zip(sources, keeps)):
        if pool.kept[index] == 0:
            continue
        for start, scores in source.chunks():
            keep_chunk = keep[start : start + scores.numel()]
            find_ties = partial and (found.tie_chunks is None or (index, start) in found.tie_chunks)
            if find_ties:
                equal = torch.nonzero((scores == t) & keep_chunk).squeeze(1)
            keep_chunk &= scores > t
            if find_ties:
                keep_chunk[equal[max(0, ties_to_prune - ties_seen) :]] = True
                ties_seen += equal.numel()
