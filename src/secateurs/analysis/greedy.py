"""The search behind an allocation: which amount each unit takes so that the cost fits the budget while the
predicted drop (the sum of the units' drops, each measured alone) stays smallest.

Greedy on the exchange rate: starting from every unit whole, repeatedly take the move (one unit to any
larger amount) that adds the least predicted drop per unit of cost saved, until the cost fits. Looking at
every larger amount, not only the next, steps over the bumps of measured curves (the lower convex hull of
each unit's drop-against-cost curve, which is what a Lagrangian relaxation would pick). Costs may couple
units (a convolution between two pruned channel groups), so a move's saving is computed where the other
units stand, and recomputed for its neighbours after each move. The last move may overshoot the budget;
a final pass gives back amounts, most drop first, while the cost still fits. With only ``max_drop`` the
same moves are taken while the predicted drop stays within it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from secateurs.analysis.costs import CostModel

#: Costs within this relative distance of the budget count as meeting it (float sums).
_SLACK = 1e-9


@dataclass(frozen=True)
class Levels:
    """Per unit, what it may take: ``amounts`` (the first 0.0: untouched), the count it then keeps (channels,
    heads or nonzero weights) and the predicted drop (0.0 at the first level)."""

    amounts: list[list[float]]
    kept: list[list[int]]
    drops: list[list[float]]

    def __len__(self) -> int:
        return len(self.amounts)

    def counts(self, chosen: Sequence[int]) -> list[int]:
        return [self.kept[u][level] for u, level in enumerate(chosen)]

    def drop(self, chosen: Sequence[int]) -> float:
        return sum(self.drops[u][level] for u, level in enumerate(chosen))


@dataclass(frozen=True)
class _Move:
    unit: int
    level: int
    extra_drop: float
    change: float  # cost change, negative = saved

    @property
    def rate(self) -> float:
        return self.extra_drop / -self.change


def _best_move(costs: CostModel, levels: Levels, chosen: list[int], kept: list[int], unit: int,
               allowance: float) -> _Move | None:
    """The move of ``unit`` to a larger amount with the least drop per cost saved, within ``allowance``."""
    best = None
    here = chosen[unit]
    for level in range(here + 1, len(levels.amounts[unit])):
        change = costs.change(kept, unit, levels.kept[unit][level])
        extra = levels.drops[unit][level] - levels.drops[unit][here]
        if change >= 0 or extra > allowance:
            continue
        move = _Move(unit, level, extra, change)
        if best is None or (move.rate, -move.change) < (best.rate, -best.change):  # ties: the finer step
            best = move
    return best


def search(costs: CostModel, levels: Levels, budget: float | None, max_drop: float | None = None) -> list[int]:
    """The level each unit takes (see the module docstring): cost within ``budget`` (absolute, in the cost
    model's units) when that can be reached, predicted drop within ``max_drop`` when given."""
    chosen = [0] * len(levels)
    kept = levels.counts(chosen)
    cost, spent = costs.cost(kept), 0.0
    allowance = lambda: math.inf if max_drop is None else max_drop - spent
    moves = {u: _best_move(costs, levels, chosen, kept, u, allowance()) for u in range(len(levels))}
    while budget is None or cost > budget * (1 + _SLACK):
        move = _next_move(costs, levels, chosen, kept, moves, allowance())
        if move is None:
            break
        chosen[move.unit], kept[move.unit] = move.level, levels.kept[move.unit][move.level]
        cost, spent = cost + move.change, spent + move.extra_drop
        for unit in costs.neighbours(move.unit) | {move.unit}:
            moves[unit] = _best_move(costs, levels, chosen, kept, unit, allowance())
    if budget is not None:
        _give_back(costs, levels, chosen, kept, budget)
    return chosen


def _next_move(costs: CostModel, levels: Levels, chosen: list[int], kept: list[int],
               moves: dict[int, _Move | None], allowance: float) -> _Move | None:
    """The cheapest cached move that still fits ``allowance`` (a unit whose cached move no longer fits is
    looked at again with the allowance left)."""
    while True:
        found = [m for m in moves.values() if m is not None]
        if not found:
            return None
        best = min(found, key=lambda m: (m.rate, -m.change))
        if best.extra_drop <= allowance:
            return best
        moves[best.unit] = _best_move(costs, levels, chosen, kept, best.unit, allowance)


def _give_back(costs: CostModel, levels: Levels, chosen: list[int], kept: list[int], budget: float) -> None:
    """Lower amounts while the cost still fits the budget and the predicted drop does not grow: the largest
    saving of drop first, then the move that brings the cost closest to the budget."""
    cost = costs.cost(kept)
    while cost <= budget * (1 + _SLACK):
        best: tuple[float, float, int, int] | None = None
        for unit, here in enumerate(chosen):
            for level in range(here):
                change = costs.change(kept, unit, levels.kept[unit][level])
                saved = levels.drops[unit][here] - levels.drops[unit][level]
                if saved >= 0 and cost + change <= budget * (1 + _SLACK) and (best is None or (saved, change) > best[:2]):
                    best = (saved, change, unit, level)
        if best is None:
            return
        _, change, unit, level = best
        chosen[unit], kept[unit] = level, levels.kept[unit][level]
        cost += change


def uniform(costs: CostModel, counts: Sequence[Sequence[int]], budget: float) -> int | None:
    """The first index ``i`` of a grid of amounts, ascending, where every unit keeping ``counts[u][i]`` fits the
    budget; None when even the last does not."""
    for index in range(len(counts[0])):
        if costs.cost([unit_counts[index] for unit_counts in counts]) <= budget * (1 + _SLACK):
            return index
    return None
