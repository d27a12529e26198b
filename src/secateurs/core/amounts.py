"""How much to prune: the one rule for every amount in the library.

An amount is a float **fraction** of the units in question (weights, rows, channels, heads, blocks) or a
non-negative int **count** of them. A fraction becomes a count with ``round`` (half to even, as
``torch.nn.utils.prune`` does). Per-layer amounts (``per_layer={pattern: amount}``) follow the same rule,
each for the units of the layers its pattern names, and take precedence over the overall amount.

Masks may prune every unit, so a fraction lies in ``[0, 1]``. Physical (structural) pruning removes units
for real, and a group left with none would be no layer at all: there a fraction lies in ``[0, 1)``
(``check_amount(..., whole=False)``).
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from secateurs.core.selection import name_matcher
from secateurs.errors import NothingPrunedError, PruningError, SelectionError

Amount = float | int
Key = TypeVar("Key", bound=Hashable)


def check_amount(amount: object, what: str = "amount", *, whole: bool = True) -> Amount:
    """``amount`` as a float fraction or an int count, or a :class:`PruningError` that says what is wrong.

    ``whole=False`` refuses the fraction 1.0: for physical pruning, which can never remove a whole group.
    """
    interval = "[0, 1]" if whole else "[0, 1)"
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise PruningError(f"{what} must be a float fraction in {interval} or an int count, got {amount!r}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise PruningError(f"{what} must not be negative, got {amount}")
        return int(amount)
    value = float(amount)
    if not (0.0 <= value <= 1.0 if whole else 0.0 <= value < 1.0):
        reason = "use a float fraction, or an int for a count" if whole else "a group is never removed whole"
        raise PruningError(f"{what} {value} is not a fraction in {interval}; {reason}")
    return value


def amount_count(amount: Amount, total: int) -> int:
    """How many of ``total`` units ``amount`` names: a count as it is, a fraction rounded half to even."""
    return amount if isinstance(amount, int) else round(amount * total)


def per_layer_amounts(
    per_layer: Mapping[str, object] | None,
    names: Mapping[Key, Iterable[str]],
    *,
    what: str,
    whole: bool = True,
) -> dict[Key, Amount]:
    """The amount of each unit of ranking (a parameter, a group, a container) that a per-layer pattern names.

    ``names`` maps each one to the names it answers to; patterns are those of :func:`~secateurs.core.selection.name_matcher`,
    and the first pattern that matches wins. A pattern that matches nothing is an error (a typo would otherwise
    prune that layer by the overall amount); ``what`` says what the patterns should have named.
    """
    found: dict[Key, Amount] = {}
    unused = []
    for pattern, amount in (per_layer or {}).items():
        checked = check_amount(amount, f"amount for {pattern!r}", whole=whole)
        matches = name_matcher(pattern)
        hits = [key for key, aliases in names.items() if any(matches(n) for n in aliases)]
        if not hits:
            unused.append(pattern)
        for key in hits:
            found.setdefault(key, checked)
    if unused:
        examples = ", ".join(next(iter(aliases), "") for aliases in list(names.values())[:4])
        raise SelectionError(f"per-layer pattern(s) {unused} match no {what}; names look like: {examples}")
    return found


def nothing_pruned(amount: Amount | None, unit: str, largest: int | None, *, already: float | None = None) -> NothingPrunedError:
    """The error for a request that removes no ``unit``: names the smallest amount that would act.

    ``largest`` is the number of units in the largest group ranked on its own (a fraction ``1 / largest``
    always removes one there; None when not known yet); ``already`` is the sparsity the layers have reached, when that is why.
    """
    if already is not None and amount is not None and not isinstance(amount, int) and already >= amount > 0:
        reason = f"the selected layers are already at {already:.1%} sparsity, at or above amount={amount}"
        fix = "ask for a larger amount"
    else:
        reason = (
            f"amount={amount} removes no {unit}" if not amount
            else f"amount={amount} removes no {unit}: it rounds to zero of the at most {largest} {unit}s ranked together"
        )
        fix = (
            "use an amount above 0" if largest is None
            else f"use amount >= {smallest_acting_fraction(largest):.4g} (or amount=1, an int count of {unit}s)"
        )
    return NothingPrunedError(f"nothing to prune: {reason}; {fix}, or pass allow_noop=True to accept a no-op")


def smallest_acting_fraction(units: int) -> float:
    """The fraction that removes one of ``units``, to 4 significant digits (a count rounds half to even, so it still does)."""
    return float(f"{1.0 / max(units, 1):.4g}") if units else 1.0
