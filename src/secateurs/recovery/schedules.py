"""When to prune and how far: one-shot, iterative, and the gradual cubic schedule of Zhu & Gupta.

A schedule is a finite list of *events* ``(position, sparsity)``: at ``position`` (a count of training
steps or epochs already done; the controller decides which unit) the model is pruned to reach
``sparsity`` (absolute: already-pruned weights stay pruned). Positions start at 0, i.e. before any
training. Schedules are plain data and round-trip through :meth:`Schedule.to_dict` and
:func:`schedule_from_dict`, so they can sit in checkpoints, recipes and JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from secateurs.errors import PruningError

Event = tuple[int, float]


def _check_sparsity(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise PruningError(f"{what} must be a fraction in [0, 1), got {value!r}")
    return float(value)


def _check_position(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PruningError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


class Schedule:
    """Base class: subclasses list their events; everything else derives from them."""

    kind: ClassVar[str] = ""

    def events(self) -> list[Event]:
        raise NotImplementedError

    def target_at(self, position: int) -> float | None:
        """The sparsity to prune to at exactly ``position``, or None when nothing happens there."""
        found = None
        for at, sparsity in self.events():
            if at == position:
                found = sparsity
        return found

    def sparsity_at(self, position: int) -> float:
        """The sparsity in force once the events up to and including ``position`` have run."""
        current = 0.0
        for at, sparsity in self.events():
            if at <= position:
                current = sparsity
        return current

    @property
    def final(self) -> float:
        events = self.events()
        return events[-1][1] if events else 0.0

    @property
    def last_position(self) -> int:
        """Position of the last pruning event: fine-tuning after it is pure recovery."""
        events = self.events()
        return events[-1][0] if events else 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class OneShot(Schedule):
    """Prune once, at ``at`` (0 = before training), then fine-tune."""

    sparsity: float
    at: int = 0
    kind: ClassVar[str] = "oneshot"

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, "sparsity")
        _check_position(self.at, "at")

    def events(self) -> list[Event]:
        return [(self.at, float(self.sparsity))] if self.sparsity > 0 else []


@dataclass(frozen=True)
class Iterative(Schedule):
    """Prune ``amount`` more every ``every`` positions from ``begin`` until ``final`` is reached.

    With ``relative=True`` each event removes ``amount`` of the weights still kept (as in iterative
    magnitude pruning: 20% of what remains each round), so sparsity after ``i`` events is
    ``1 - (1 - amount) ** i``; otherwise sparsity grows linearly, ``i * amount``. The last event is
    capped at ``final``.
    """

    final_sparsity: float
    amount: float
    every: int = 1
    begin: int = 0
    relative: bool = False
    kind: ClassVar[str] = "iterative"

    def __post_init__(self) -> None:
        _check_sparsity(self.final_sparsity, "final_sparsity")
        amount = _check_sparsity(self.amount, "amount")
        if amount == 0:
            raise PruningError("amount per event must be > 0, or the target is never reached")
        _check_position(self.every, "every", 1)
        _check_position(self.begin, "begin")

    def events(self) -> list[Event]:
        final = float(self.final_sparsity)
        events: list[Event] = []
        i = 0
        while final > 0 and (not events or events[-1][1] < final):
            i += 1
            reached = 1 - (1 - self.amount) ** i if self.relative else i * self.amount
            # 1e-9: 0.9 / 0.1 must take 9 events, not 10, despite binary fractions
            sparsity = final if reached >= final - 1e-9 else reached
            events.append((self.begin + (i - 1) * self.every, sparsity))
        return events


@dataclass(frozen=True)
class Gradual(Schedule):
    """The cubic schedule of Zhu & Gupta (2017), as TF-MOT's ``PolynomialDecay`` and Distiller's AGP.

    ``s(t) = s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** power`` at
    ``t = begin, begin + frequency, ...`` and at ``end``: prune fast while there are many redundant
    weights, slowly as the model gets thin.
    """

    final_sparsity: float
    end: int
    initial_sparsity: float = 0.0
    begin: int = 0
    frequency: int = 1
    power: float = 3.0
    kind: ClassVar[str] = "gradual"

    def __post_init__(self) -> None:
        initial = _check_sparsity(self.initial_sparsity, "initial_sparsity")
        final = _check_sparsity(self.final_sparsity, "final_sparsity")
        if initial > final:
            raise PruningError(f"initial_sparsity {initial} exceeds final_sparsity {final}; sparsity only grows")
        _check_position(self.begin, "begin")
        _check_position(self.frequency, "frequency", 1)
        if _check_position(self.end, "end") <= self.begin:
            raise PruningError(f"end ({self.end}) must come after begin ({self.begin})")
        if not (isinstance(self.power, (int, float)) and self.power > 0 and math.isfinite(self.power)):
            raise PruningError(f"power must be a positive number (3 for the cubic schedule), got {self.power!r}")

    def value(self, position: int) -> float:
        """The cubic curve itself, clamped to [begin, end]."""
        progress = min(max((position - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** self.power

    def events(self) -> list[Event]:
        positions = list(range(self.begin, self.end, self.frequency)) + [self.end]
        return [(t, self.value(t)) for t in positions if self.value(t) > 0]


SCHEDULES: dict[str, type[Schedule]] = {cls.kind: cls for cls in (OneShot, Iterative, Gradual)}


def schedule_from_dict(data: Mapping[str, Any]) -> Schedule:
    """Inverse of :meth:`Schedule.to_dict`."""
    if not isinstance(data, Mapping) or "kind" not in data:
        raise PruningError(f"a schedule dict needs a 'kind' ({', '.join(SCHEDULES)}), got {data!r}")
    cls = SCHEDULES.get(str(data["kind"]).lower())
    if cls is None:
        raise PruningError(f"unknown schedule kind {data['kind']!r}; use one of {', '.join(SCHEDULES)}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names - {"kind"})
    if unknown:
        raise PruningError(f"{cls.kind} schedule does not take {unknown}; it takes {sorted(names)}")
    try:
        return cls(**{k: v for k, v in data.items() if k != "kind"})
    except TypeError as exc:
        raise PruningError(f"incomplete {cls.kind} schedule {dict(data)}: {exc}") from None


def make_schedule(kind: str, sparsity: float, epochs: int, steps_per_epoch: int) -> tuple[Schedule, str]:
    """A sensible schedule of ``kind`` for a fine-tuning budget, and its unit (``"epoch"``/``"step"``).

    Iterative and gradual pruning finish after about 60% of the budget, leaving the rest to recover;
    iterative prunes in up to 5 equal rounds at epoch boundaries, gradual every few steps (about 20 events).
    """
    _check_sparsity(sparsity, "sparsity")
    _check_position(epochs, "epochs", 1)
    _check_position(steps_per_epoch, "steps_per_epoch", 1)
    kind = kind.lower()
    if kind == "oneshot":
        return OneShot(sparsity), "epoch"
    if kind == "iterative":
        pruning_epochs = max(1, round(0.6 * epochs))
        rounds = max(1, min(5, pruning_epochs))
        every = max(1, pruning_epochs // rounds)
        return Iterative(sparsity, amount=sparsity / rounds, every=every), "epoch"
    if kind == "gradual":
        end = max(1, round(0.6 * epochs * steps_per_epoch))
        return Gradual(sparsity, end=end, frequency=max(1, end // 20)), "step"
    raise PruningError(f"unknown schedule {kind!r}; use oneshot, iterative or gradual")
