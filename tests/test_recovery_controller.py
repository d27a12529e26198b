"""PruningController, the fit loop and recover(): when pruning happens, what is measured, shrinking hand-off."""

import pytest
import torch
from torch import nn

from secateurs import prune
from secateurs.core.masks import masked_parameters
from secateurs.errors import PruningError
from secateurs.recovery import Gradual, Iterative, OneShot, PruningController, fit, recover, top1_accuracy
from secateurs.recovery.checkpoint import CheckpointManager

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def toy_data(n: int = 256, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def sparsity(model: nn.Module) -> float:
    masks = [mask for *_, mask in masked_parameters(model)]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def test_start_is_required_and_runs_position_zero_events():
    model = mlp()
    controller = PruningController(model, OneShot(0.5), unit="epoch")
    with pytest.raises(PruningError, match="start"):
        controller.on_epoch()
    events = controller.start()
    assert len(events) == 1 and events[0].position == 0 and events[0].last
    assert sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert controller.done
    assert controller.start() == []  # idempotent


@pytest.mark.parametrize("normalize_scores", [True, False])
def test_a_scheduled_cut_ranks_channels_as_prune_does(normalize_scores):
    torch.manual_seed(0)
    model, reference = mlp(), mlp()
    reference.load_state_dict(model.state_dict())
    options = {"normalize_scores": normalize_scores} if not normalize_scores else {}
    PruningController(model, OneShot(0.4), granularity="channel", scope="global", **options).start()
    prune(reference, 0.4, granularity="channel", scope="global", normalize_scores=normalize_scores)
    for (name, *_, mask), (_, *_, expected) in zip(masked_parameters(model), masked_parameters(reference)):
        assert torch.equal(mask, expected), name


def test_epoch_unit_ignores_steps_and_fires_on_epoch_boundaries():
    model = mlp()
    controller = PruningController(model, Iterative(0.6, amount=0.2, every=2, begin=1), unit="epoch")
    assert controller.start() == []
    fired = []
    for epoch in range(1, 7):
        for _ in range(3):
            assert controller.on_step() is None
        event = controller.on_epoch()
        if event is not None:
            fired.append((event.position, round(event.target, 3), event.last))
    assert fired == [(1, 0.2, False), (3, 0.4, False), (5, 0.6, True)]
    assert controller.steps == 18 and controller.epochs == 6


def test_skipped_positions_are_caught_up_to_the_latest_target():
    model = mlp()
    controller = PruningController(model, Gradual(0.8, end=10, frequency=2), unit="step")
    controller.start()
    controller.steps = 7  # the caller skipped steps 1..7
    event = controller.on_step()
    assert event.position == 8 and event.target == pytest.approx(Gradual(0.8, end=10, frequency=2).value(8))
    assert len(controller.history) == 1


def test_state_dict_round_trip_and_schedule_mismatch():
    model = mlp()
    schedule = Gradual(0.7, end=6, frequency=2)
    controller = PruningController(model, schedule, unit="step")
    controller.start()
    for _ in range(4):
        controller.on_step()
    state = controller.state_dict()
    other = PruningController(mlp(), schedule, unit="step")
    other.load_state_dict(state)
    assert (other.steps, other.next_event, other.started) == (4, 2, True)
    assert [e.to_dict() for e in other.history] == [e.to_dict() for e in controller.history]
    with pytest.raises(PruningError, match="same schedule"):
        PruningController(mlp(), Gradual(0.8, end=6, frequency=2), unit="step").load_state_dict(state)


def test_bad_controller_options_are_refused():
    with pytest.raises(PruningError, match="structured granularity"):
        PruningController(mlp(), OneShot(0.5), shrink=True)
    with pytest.raises(PruningError, match="example_inputs"):
        PruningController(mlp(), OneShot(0.5), granularity="channel", shrink=True)
    with pytest.raises(PruningError, match="unit"):
        PruningController(mlp(), OneShot(0.5), unit="batch")
    with pytest.raises(PruningError, match="Schedule"):
        PruningController(mlp(), {"kind": "oneshot"})
    with pytest.raises(PruningError, match="after some training"):
        PruningController(mlp(), OneShot(0.5), method="movement").start()


def test_fit_trains_prunes_and_measures_right_after_the_last_event():
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_data()
    after_last = {}

    def on_prune(event):
        if event.last:
            after_last["accuracy"] = top1_accuracy(model, (x[:64], y[:64]))

    controller = PruningController(model, Iterative(0.6, amount=0.3, every=1, begin=1), unit="epoch", on_prune=on_prune)
    result = fit(model, (x[64:], y[64:]), epochs=4, controller=controller, eval_data=(x[:64], y[:64]), lr=1e-2, batch_size=32)
    assert [e.position for e in result.events] == [1, 2]
    assert result.accuracy_pruned == after_last["accuracy"]
    assert len(result.history) == 4 and result.steps == 4 * 6
    assert result.history[-1].lr < result.history[0].lr  # cosine decay
    assert result.accuracy > 0.55  # chance is about 0.4
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)


def test_fit_refuses_a_controller_for_another_model():
    controller = PruningController(mlp(), OneShot(0.5))
    with pytest.raises(PruningError, match="another model"):
        fit(mlp(), toy_data(), epochs=1, controller=controller)


def shrink_hidden(model: nn.Module, target: float, reached: float) -> nn.Module:
    """Hand surgery for the test MLP: drop the lowest-norm neurons of the first hidden layer."""
    first, second = model[0], model[2]
    keep_count = max(1, round(32 * (1 - target)))
    keep = first.weight.detach().norm(dim=1).argsort(descending=True)[:keep_count].sort().values
    new_first, new_second = nn.Linear(10, keep_count), nn.Linear(keep_count, second.out_features)
    with torch.no_grad():
        new_first.weight.copy_(first.weight[keep])
        new_first.bias.copy_(first.bias[keep])
        new_second.weight.copy_(second.weight[:, keep])
        new_second.bias.copy_(second.bias)
    model[0], model[2] = new_first, new_second
    return model


def test_shrinking_between_cycles_rebuilds_the_optimizer_and_resumes(tmp_path):
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_data()
    schedule = Iterative(0.5, amount=0.25, every=1, begin=1)
    controller = PruningController(model, schedule, unit="epoch", granularity="channel", shrink=shrink_hidden)
    result = fit(model, (x, y), epochs=3, controller=controller, eval_data=(x, y), lr=1e-2, batch_size=64,
                 checkpoint_dir=tmp_path)
    assert [e.shrunk for e in result.events] == [True, True]
    assert result.model[0].out_features == 16
    params = [log.params for log in result.history]
    assert params[0] > params[1] > params[2]
    # the checkpoint holds the shrunk architecture; a resumed run picks it up and carries on
    assert CheckpointManager(tmp_path).load()["module"] is not None
    fresh = PruningController(mlp(), schedule, unit="epoch", granularity="channel", shrink=shrink_hidden)
    resumed = fit(fresh.model, (x, y), epochs=4, controller=fresh, eval_data=(x, y), lr=1e-2, batch_size=64,
                  checkpoint_dir=tmp_path)
    assert resumed.resumed_from is not None and len(resumed.history) == 4
    assert resumed.model[0].out_features == 16 and resumed.steps == 16


def test_recover_reports_dense_pruned_and_finetuned_accuracy():
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_data(512)
    fit(model, (x[128:], y[128:]), epochs=3, lr=1e-2)
    dense = top1_accuracy(model, (x[:128], y[:128]))
    result = recover(model, (x[128:], y[128:]), (x[:128], y[:128]), amount=0.9, epochs=2, schedule="oneshot", lr=1e-2)
    data = result.to_dict()
    assert {"accuracy_dense", "accuracy_pruned", "accuracy_finetuned", "recovered", "epoch_seconds"} <= set(data)
    assert data["accuracy_dense"] == dense
    assert data["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert data["accuracy_finetuned"] == top1_accuracy(result.model, (x[:128], y[:128]))
    assert len(data["epoch_seconds"]) == 2


def test_recover_gradual_measures_pruned_accuracy_before_recovery_epochs():
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_data(512)
    result = recover(model, (x[128:], y[128:]), (x[:128], y[:128]), amount=0.5, epochs=3, schedule="gradual", batch_size=64)
    assert result.unit == "step" and result.events[-1].last
    assert result.events[-1].position == round(0.6 * 3 * 6)
    with pytest.raises(PruningError, match="unit"):
        recover(mlp(), (x, y), (x, y), amount=0.5, epochs=1, schedule=OneShot(0.5))


def test_shrink_true_uses_secateurs_structural_between_cycles(tmp_path):
    pytest.importorskip("secateurs.structural")
    torch.manual_seed(0)

    def conv_net():
        return nn.Sequential(
            nn.Conv1d(1, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8, 3),
        )

    model = conv_net()
    x = torch.randn(128, 1, 8)
    y = (x.mean(dim=(1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()
    schedule = Iterative(0.5, amount=0.25, every=1, begin=1)
    controller = PruningController(model, schedule, unit="epoch", granularity="channel", shrink=True, example_inputs=x[:2])
    result = fit(model, (x, y), epochs=3, controller=controller, eval_data=(x, y), batch_size=32, checkpoint_dir=tmp_path)
    assert [e.shrunk for e in result.events] == [True, True]
    assert result.model[0].out_channels == 8 and result.model[3].out_channels == 8
    params = [log.params for log in result.history]
    assert params[0] > params[1] > params[2]
    assert result.accuracy_pruned is not None
    fresh = PruningController(conv_net(), schedule, unit="epoch", granularity="channel", shrink=True, example_inputs=x[:2])
    resumed = fit(fresh.model, (x, y), epochs=4, controller=fresh, batch_size=32, checkpoint_dir=tmp_path)
    assert resumed.model[0].out_channels == 8 and resumed.steps == 16


def test_fit_takes_a_dataloader_and_keeps_its_batch_size_and_collation():
    from torch.utils.data import DataLoader, Dataset

    class Pairs(Dataset):
        def __init__(self):
            self.x, self.y = toy_data(96)

        def __len__(self):
            return 96

        def __getitem__(self, i):
            return {"inputs": self.x[i], "label": self.y[i]}

    seen = []

    def collate(items):
        seen.append(len(items))
        return torch.stack([i["inputs"] for i in items]), torch.stack([i["label"] for i in items])

    loader = DataLoader(Pairs(), batch_size=24, shuffle=True, collate_fn=collate)
    result = fit(mlp(), loader, epochs=2, lr=1e-2)
    assert result.steps == 8 and set(seen) == {24}


def test_per_layer_amounts_are_reached_at_the_end_of_the_schedule_in_proportion():
    model = mlp()
    per_layer = {"0": 0.8, "2": 0.4}
    schedule = Iterative(0.8, amount=0.4, every=1, begin=0)  # events at 0.4, then 0.8
    controller = PruningController(model, schedule, unit="epoch", include=list(per_layer), per_layer=per_layer)
    controller.start()

    def layer_sparsity(index: int) -> float:
        return 1 - float(model[index].weight_mask.float().mean())

    assert layer_sparsity(0) == pytest.approx(0.4, abs=0.02) and layer_sparsity(2) == pytest.approx(0.2, abs=0.02)
    controller.on_epoch()
    assert layer_sparsity(0) == pytest.approx(0.8, abs=0.02) and layer_sparsity(2) == pytest.approx(0.4, abs=0.02)


def test_per_layer_amounts_with_shrinking_are_refused_over_several_cuts():
    with pytest.raises(PruningError, match="one-shot schedule"):
        PruningController(mlp(), Gradual(0.5, end=10), granularity="channel", shrink=True,
                          example_inputs=torch.randn(2, 10), per_layer={"0": 0.5})
