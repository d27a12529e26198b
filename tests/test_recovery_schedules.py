"""Schedules: the cubic formula at known points, iterative steps, serialisation."""

import json

import pytest

from secateurs.errors import PruningError
from secateurs.recovery import Gradual, Iterative, OneShot, make_schedule, schedule_from_dict


def test_cubic_schedule_at_known_points():
    schedule = Gradual(0.9, end=100, begin=0, frequency=10)
    # s(t) = s_f + (s_i - s_f) (1 - t / n dt)^3
    assert schedule.value(0) == 0.0
    assert schedule.value(50) == pytest.approx(0.9 - 0.9 * 0.5**3)  # 0.7875
    assert schedule.value(90) == pytest.approx(0.9 - 0.9 * 0.1**3)
    assert schedule.value(100) == pytest.approx(0.9)
    assert schedule.value(250) == pytest.approx(0.9)  # clamped after end
    positions = [p for p, _ in schedule.events()]
    assert positions == list(range(10, 101, 10))  # the zero-sparsity event at begin is dropped
    sparsities = [s for _, s in schedule.events()]
    assert sparsities == sorted(sparsities)
    steps = [b - a for a, b in zip([0.0, *sparsities], sparsities)]
    assert steps == sorted(steps, reverse=True)  # fast first, slow at the end


def test_cubic_schedule_with_initial_sparsity_and_offset_begin():
    schedule = Gradual(0.9, initial_sparsity=0.5, begin=20, end=60, frequency=10)
    assert schedule.events()[0] == (20, pytest.approx(0.5))
    assert schedule.value(40) == pytest.approx(0.9 - 0.4 * 0.5**3)  # 0.85
    assert schedule.sparsity_at(19) == 0.0
    assert schedule.sparsity_at(45) == pytest.approx(schedule.value(40))
    assert schedule.target_at(45) is None
    assert schedule.target_at(60) == pytest.approx(0.9)
    assert schedule.last_position == 60


def test_cubic_schedule_always_ends_on_end():
    schedule = Gradual(0.8, end=25, frequency=10)
    assert [p for p, _ in schedule.events()] == [10, 20, 25]
    assert schedule.final == pytest.approx(0.8)


def test_iterative_linear_steps():
    schedule = Iterative(0.9, amount=0.1, every=2)
    events = schedule.events()
    assert [p for p, _ in events] == list(range(0, 17, 2))  # 9 events, not 10, despite 0.9 / 0.1
    assert [s for _, s in events] == pytest.approx([0.1 * i for i in range(1, 10)])
    assert events[-1][1] == 0.9


def test_iterative_relative_steps_cap_at_final():
    schedule = Iterative(0.5, amount=0.2, every=3, begin=1, relative=True)
    assert schedule.events() == [(1, pytest.approx(0.2)), (4, pytest.approx(0.36)), (7, pytest.approx(0.488)), (10, 0.5)]


def test_oneshot():
    assert OneShot(0.7).events() == [(0, 0.7)]
    assert OneShot(0.7, at=3).sparsity_at(2) == 0.0
    assert OneShot(0.0).events() == []


@pytest.mark.parametrize(
    "schedule",
    [OneShot(0.5, at=2), Iterative(0.8, 0.2, every=5, begin=1, relative=True), Gradual(0.9, end=40, initial_sparsity=0.1, begin=4, frequency=3, power=2.0)],
)
def test_round_trip_through_dict_and_json(schedule):
    data = json.loads(json.dumps(schedule.to_dict()))
    assert data["kind"] == schedule.kind
    restored = schedule_from_dict(data)
    assert restored == schedule
    assert restored.events() == schedule.events()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kind": "cosine"}, "unknown schedule kind"),
        ({"sparsity": 0.5}, "needs a 'kind'"),
        ({"kind": "oneshot", "sparsity": 0.5, "every": 2}, "does not take"),
        ({"kind": "gradual", "final_sparsity": 0.5}, "incomplete"),
        ({"kind": "gradual", "final_sparsity": 0.5, "initial_sparsity": 0.6, "end": 10}, "exceeds"),
        ({"kind": "gradual", "final_sparsity": 0.5, "begin": 10, "end": 10}, "must come after"),
        ({"kind": "iterative", "final_sparsity": 1.0, "amount": 0.1}, r"in \[0, 1\)"),
        ({"kind": "iterative", "final_sparsity": 0.5, "amount": 0.0}, "never reached"),
        ({"kind": "oneshot", "sparsity": 0.5, "at": -1}, ">= 0"),
    ],
)
def test_bad_schedules_are_refused(data, message):
    with pytest.raises(PruningError, match=message):
        schedule_from_dict(data)


def test_make_schedule_leaves_time_to_recover():
    gradual, unit = make_schedule("gradual", 0.9, epochs=10, steps_per_epoch=30)
    assert unit == "step" and gradual.final == pytest.approx(0.9)
    assert gradual.last_position == 180 and len(gradual.events()) == 20
    iterative, unit = make_schedule("iterative", 0.9, epochs=10, steps_per_epoch=30)
    assert unit == "epoch" and iterative.last_position == 4 and iterative.final == pytest.approx(0.9)
    assert make_schedule("oneshot", 0.5, 3, 7) == (OneShot(0.5), "epoch")
    with pytest.raises(PruningError, match="unknown schedule"):
        make_schedule("linear", 0.5, 3, 7)
