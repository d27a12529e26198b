"""A small object your own training loop calls: it prunes when the schedule says so.

    controller = PruningController(model, Gradual(0.9, end=1000, frequency=50), unit="step")
    controller.start()                       # events at position 0 happen before training
    for epoch in range(epochs):
        for x, y in loader:
            loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad()
            event = controller.on_step()     # after the optimizer step
            if event is not None and event.shrunk:
                optimizer = make_optimizer(model.parameters())   # parameters were replaced
        controller.on_epoch()

Masks keep pruned weights at exactly zero after every optimizer step (see :mod:`secateurs.masks`), so
the loop needs nothing else. Positions count completed units: ``on_step`` after step ``n`` fires the
events at step ``n``; ``on_epoch`` after epoch ``e`` fires those at epoch ``e``. A position skipped by the
caller is caught up at the next call (sparsity targets are absolute, so reaching the latest is enough).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from secateurs.core.criteria import Criterion
from secateurs.core.engine import PruneReport, prune
from secateurs.core.patterns import NM, Pattern, Structured, parse_pattern
from secateurs.core.summary import count_params
from secateurs.errors import PruningError
from secateurs.recovery.distributed import is_distributed, sync_masks, unwrap
from secateurs.recovery.movement import MovementTracker, track_movement
from secateurs.recovery.schedules import Schedule, schedule_from_dict
from secateurs.recovery.shrinking import ShrinkFn, default_shrink

Unit = Literal["epoch", "step"]
SELECTION_OPTIONS = ("include", "exclude", "types", "param_names", "include_output", "include_frozen")


@dataclass
class PruneEvent:
    """One pruning event as it happened."""

    position: int
    unit: str
    target: float
    sparsity: float
    params: int
    shrunk: bool = False
    last: bool = False
    report: PruneReport | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("report")
        return data


def _check_setup(model: nn.Module, schedule: Schedule, unit: str, pattern: Pattern, granularity: str,
                 shrink: bool | ShrinkFn, example_inputs: Any) -> None:
    """Refuse, before training starts, a controller that could not carry out its schedule."""
    if not isinstance(schedule, Schedule):
        raise PruningError(f"schedule must be a Schedule (OneShot, Iterative, Gradual), got {type(schedule).__name__}")
    if unit not in ("epoch", "step"):
        raise PruningError(f"unit must be 'epoch' or 'step', got {unit!r}")
    if shrink and not isinstance(pattern, Structured):
        raise PruningError(f"shrink=True removes whole channels; it needs a structured granularity such as 'channel', not {granularity!r}")
    if isinstance(pattern, NM) and len(schedule.events()) != 1:
        raise PruningError(
            f"N:M ({granularity}) fixes the sparsity of every block at once; prune it one-shot, then fine-tune"
        )
    if shrink and model is not unwrap(model):
        raise PruningError(
            "shrink=True replaces parameters, which a DistributedDataParallel/compiled wrapper has already "
            "captured; shrink the bare model between runs, or prune with masks only (shrink=False)"
        )
    if shrink is True and example_inputs is None:
        raise PruningError("shrink=True traces the model to find coupled channels: pass example_inputs=")


def _check_per_layer(schedule: Schedule, shrink: bool | ShrinkFn, options: dict[str, Any]) -> None:
    if options.get("per_layer") and shrink and len(schedule.events()) > 1:
        raise PruningError(
            "per_layer amounts are shrunk in one cut (each cut shrinks what is left, so they cannot be split over a "
            "schedule); use a one-shot schedule, or masks (shrink=False) and shrink after training"
        )


def _share(amount: float | int, share: float) -> float | int:
    """``share`` of a per-layer amount: a fraction scaled, a count rounded."""
    return round(amount * share) if isinstance(amount, int) else amount * share


class PruningController:
    """Prunes ``model`` following ``schedule``; positions count ``unit``s (``"epoch"`` or ``"step"``).

    ``method``, ``granularity``, ``scope``, ``normalize_scores`` and ``**options`` (``include``, ``exclude``,
    ``per_layer``, criterion options...; ``per_layer`` amounts are where the schedule ends, each event taking
    its share of them) go to :func:`secateurs.prune` at each event (to
    :func:`secateurs.structural.shrink` when shrinking: ``exclude``, ``round_to``, ``min_keep``...), so a scheduled
    cut ranks exactly as a one-shot call does. ``method="movement"`` starts accumulating
    movement scores at :meth:`start`. ``shrink=True`` (structured patterns) physically removes pruned
    channels at each event with :mod:`secateurs.structural`, which needs ``example_inputs``; a
    callable ``shrink(model, target, reached) -> model | None`` replaces that step (see
    :mod:`secateurs.recovery.shrinking`). After a shrinking event the
    model's parameters are new tensors: rebuild the optimizer (``event.shrunk`` says so).
    Under ``torch.distributed``, masks are broadcast from rank 0 after each event.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        *,
        unit: Unit = "epoch",
        method: str | Criterion = "magnitude",
        granularity: str = "unstructured",
        scope: str = "local",
        normalize_scores: bool = True,
        shrink: bool | ShrinkFn = False,
        example_inputs: Any = None,
        on_prune: Callable[[PruneEvent], None] | None = None,
        **options: Any,
    ) -> None:
        pattern_obj = parse_pattern(granularity)
        _check_setup(model, schedule, unit, pattern_obj, granularity, shrink, example_inputs)
        _check_per_layer(schedule, shrink, options)
        self.model = model
        self.schedule = schedule
        self.unit: Unit = unit
        self.method = method
        self.granularity = granularity
        #: N:M fixes the sparsity of every block: its events prune with no amount.
        self.fixed_sparsity = isinstance(pattern_obj, NM)
        self.scope = scope
        self.normalize_scores = normalize_scores
        self.options = options
        self.shrink_fn: ShrinkFn | None = None
        if shrink is True:
            self.shrink_fn = default_shrink(example_inputs, method, scope, normalize_scores, options)
        elif shrink:
            self.shrink_fn = shrink
        self.on_prune = on_prune
        self.steps = 0
        self.epochs = 0
        self.started = False
        self.next_event = 0
        self.history: list[PruneEvent] = []
        self.tracker: MovementTracker | None = None

    @property
    def position(self) -> int:
        return self.steps if self.unit == "step" else self.epochs

    @property
    def done(self) -> bool:
        """True once the last event of the schedule has run: what follows is pure recovery."""
        return self.next_event >= len(self.schedule.events())

    @property
    def uses_movement(self) -> bool:
        return getattr(self.method, "name", self.method) == "movement"

    def start(self) -> list[PruneEvent]:
        """Begin: start movement tracking if needed and run the events at the current position."""
        if not self.started:
            self.started = True
            if self.uses_movement:
                self.tracker = self._movement_tracker()
        event = self._catch_up()
        return [event] if event else []

    def on_step(self) -> PruneEvent | None:
        """Call after each optimizer step."""
        self._require_started()
        self.steps += 1
        return self._catch_up() if self.unit == "step" else None

    def on_epoch(self) -> PruneEvent | None:
        """Call at the end of each epoch."""
        self._require_started()
        self.epochs += 1
        return self._catch_up() if self.unit == "epoch" else None

    def _require_started(self) -> None:
        if not self.started:
            raise PruningError("call controller.start() before training, so pruning planned at position 0 happens first")

    def _movement_tracker(self) -> MovementTracker:
        selection = {k: v for k, v in self.options.items() if k in SELECTION_OPTIONS}
        return track_movement(unwrap(self.model), **selection)

    def _catch_up(self) -> PruneEvent | None:
        events = self.schedule.events()
        due = [i for i in range(self.next_event, len(events)) if events[i][0] <= self.position]
        if not due:
            return None
        index = due[-1]
        self.next_event = index + 1
        return self._prune(events[index][1], last=index == len(events) - 1)

    def _prune(self, target: float, last: bool) -> PruneEvent:
        if self.uses_movement and self.steps == 0:
            raise PruningError(
                "movement pruning ranks weights by how training moves them; schedule its first event after "
                "some training (begin > 0), or use another method for the first cut"
            )
        model = unwrap(self.model)
        report = None
        if self.shrink_fn is not None:
            reached = self.history[-1].sparsity if self.history else 0.0
            shrunk = self.shrink_fn(model, target, reached)
            self.model = model = shrunk if shrunk is not None else model
            sparsity = target
            if self.tracker is not None:
                self.tracker.stop()
                self.tracker = self._movement_tracker()  # new tensors: scores restart
        else:
            amount = None if self.fixed_sparsity else target
            report = prune(model, amount, method=self.method, granularity=self.granularity, scope=self.scope,  # type: ignore[arg-type]
                           normalize_scores=self.normalize_scores, **{**self._cut_options(target), "allow_noop": True})
            sparsity = report.sparsity
            if is_distributed():
                sync_masks(model)
        event = PruneEvent(
            position=self.position,
            unit=self.unit,
            target=target,
            sparsity=sparsity,
            params=count_params(model),
            shrunk=self.shrink_fn is not None,
            last=last,
            report=report,
        )
        self.history.append(event)
        if self.on_prune is not None:
            self.on_prune(event)
        return event

    def _cut_options(self, target: float) -> dict[str, Any]:
        """The options of one cut: ``per_layer`` amounts are where the schedule ends, so a cut to ``target`` takes
        ``target / final`` of each."""
        per_layer, final = self.options.get("per_layer"), self.schedule.final
        if not per_layer or final <= 0 or target >= final:
            return self.options
        return {**self.options, "per_layer": {name: _share(amount, target / final) for name, amount in per_layer.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Schedule position and history (masks live in the model; save them with it)."""
        return {
            "schedule": self.schedule.to_dict(),
            "unit": self.unit,
            "steps": self.steps,
            "epochs": self.epochs,
            "started": self.started,
            "next_event": self.next_event,
            "history": [event.to_dict() for event in self.history],
            "movement": self.tracker.state_dict() if self.tracker is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = schedule_from_dict(state["schedule"])
        if saved != self.schedule or state["unit"] != self.unit:
            raise PruningError(
                f"checkpoint was made with schedule {state['schedule']} per {state['unit']}, not "
                f"{self.schedule.to_dict()} per {self.unit}; resume with the same schedule"
            )
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        self.started, self.next_event = bool(state["started"]), int(state["next_event"])
        self.history = [PruneEvent(**event) for event in state["history"]]
        if state.get("movement") is not None:
            if self.tracker is None:
                self.tracker = self._movement_tracker()
            self.tracker.load_state_dict({k: torch.as_tensor(v) for k, v in state["movement"].items()})
