"""Movement scores accumulate -W * grad at each optimizer step and drive the "movement" criterion."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs import get_criterion, prune
from secateurs.core.masks import get_mask
from secateurs.errors import PruningError
from secateurs.recovery import Gradual, PruningController, track_movement
from secateurs.recovery.movement import Movement, movement_scores


def two_layers() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def test_scores_accumulate_minus_w_times_grad_before_each_update():
    torch.manual_seed(0)
    model = two_layers()
    tracker = track_movement(model)
    assert tracker.names == ["0.weight"]  # output layer excluded, as for pruning
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weight = model[0].weight
    expected = torch.zeros_like(weight)
    for _ in range(3):
        x = torch.randn(16, 6)
        optimizer.zero_grad()
        F.mse_loss(model(x), torch.ones(16, 2)).backward()
        expected -= weight.detach() * weight.grad  # W before the update, as in Sanh et al.
        optimizer.step()
    assert torch.allclose(tracker.scores()["0.weight"], expected, atol=1e-7)
    assert movement_scores(weight) is tracker.scores()["0.weight"]


def test_weights_moving_away_from_zero_score_high():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0]]))
    model = nn.Sequential(layer, nn.Identity())
    tracker = track_movement(model, include="0", include_output=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        # first weight pushed up (away from zero), second pushed down (towards zero)
        (-(layer.weight[0, 0]) + layer.weight[0, 1]).backward()
        optimizer.step()
    scores = tracker.scores()["0.weight"][0]
    assert scores[0] > 0 > scores[1]
    prune(model, 0.5, method="movement", include="0")
    assert get_mask(layer, "weight").tolist() == [[True, False]]


def test_movement_criterion_prunes_the_lowest_scores_and_needs_tracking():
    torch.manual_seed(0)
    model = two_layers()
    with pytest.raises(PruningError, match="needs training first"):
        prune(model, 0.5, method="movement")
    tracker = track_movement(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(32, 6)), torch.randint(0, 2, (32,))).backward()
        optimizer.step()
    scores = tracker.scores()["0.weight"].clone()
    prune(model, 0.75, method="movement")
    keep = get_mask(model[0], "weight")
    assert int(keep.sum()) == 12
    assert scores[keep].min() >= scores[~keep].max()
    assert isinstance(get_criterion("movement"), Movement)


def test_tracker_state_round_trip_reset_and_stop():
    model = two_layers()
    tracker = track_movement(model)
    with torch.no_grad():
        tracker.scores()["0.weight"].fill_(2.0)
    state = tracker.state_dict()
    tracker.reset()
    assert float(tracker.scores()["0.weight"].abs().sum()) == 0.0
    tracker.load_state_dict(state)
    assert torch.equal(tracker.scores()["0.weight"], torch.full((8, 6), 2.0))
    with pytest.raises(PruningError, match="shape"):
        tracker.load_state_dict({"0.weight": torch.zeros(3)})
    tracker.stop()
    assert movement_scores(model[0].weight) is None


def test_controller_runs_movement_pruning_after_some_training():
    torch.manual_seed(0)
    model = two_layers()
    controller = PruningController(model, Gradual(0.5, begin=2, end=6, frequency=2), unit="step", method="movement")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    controller.start()
    assert controller.tracker is not None and controller.history == []
    for _ in range(6):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 2, (8,))).backward()
        optimizer.step()
        controller.on_step()
    assert [e.position for e in controller.history] == [4, 6]
    assert 1 - float(get_mask(model[0], "weight").float().mean()) == pytest.approx(0.5)
    assert set(controller.state_dict()["movement"]) == {"0.weight"}
    controller.tracker.stop()
