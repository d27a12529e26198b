"""Pruned weights stay exactly zero through recovery, whatever the optimizer, while pruning mid-training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs.core.masks import masked_parameters
from secateurs.recovery import Gradual, PruningController

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 12, 16), nn.ReLU(), nn.Linear(16, 4),
    )


OPTIMIZERS = {
    "sgd-momentum-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw-weight-decay": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adamw-foreach-amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=True, amsgrad=True),
    "rmsprop-momentum": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.05, weight_decay=1e-3),
}


def assert_pruned_are_zero(model: nn.Module) -> int:
    count = 0
    for name, module, param_name, mask in masked_parameters(model):
        pruned = module._parameters[param_name].detach()[~mask]
        assert torch.equal(pruned, torch.zeros_like(pruned)), f"{name} has non-zero pruned weights"
        count += int((~mask).sum())
    return count


def train_with_schedule(make_optimizer, *, granularity="unstructured", clip=None, autocast=False, steps=16):
    torch.manual_seed(0)
    model = small_cnn()
    x, y = torch.randn(32, 1, 12), torch.randint(0, 4, (32,))
    controller = PruningController(model, Gradual(0.75, begin=2, end=10, frequency=2), unit="step", granularity=granularity)
    optimizer = make_optimizer(model.parameters())
    controller.start()
    start = [p.detach().clone() for p in model.parameters()]
    for step in range(steps):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        controller.on_step()
        assert_pruned_are_zero(model)
    assert controller.done
    assert any(not torch.equal(a, b.detach()) for a, b in zip(start, model.parameters()))  # it did train
    return model


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_masks_hold_under_every_optimizer_while_pruning_mid_training(name):
    model = train_with_schedule(OPTIMIZERS[name])
    zeros = assert_pruned_are_zero(model)
    kept = sum(int(mask.sum()) for *_, mask in masked_parameters(model))
    assert zeros / (zeros + kept) == pytest.approx(0.75, abs=0.01)


def test_masks_hold_with_gradient_clipping_and_cpu_autocast():
    train_with_schedule(OPTIMIZERS["adamw-weight-decay"], clip=0.5, autocast=True)


def test_structured_masks_hold_whole_channels_at_zero():
    model = train_with_schedule(OPTIMIZERS["sgd-momentum-nesterov-wd"], granularity="channel")
    conv = model[0]
    rows = conv.weight.detach().flatten(1).abs().sum(1)
    assert int((rows == 0).sum()) == 6  # 75% of 8 filters


def test_masks_hold_under_a_hand_written_update_loop():
    """No torch.optim at all: the gradient hook alone keeps pruned weights at zero."""
    torch.manual_seed(0)
    model = small_cnn()
    controller = PruningController(model, Gradual(0.5, end=4, frequency=2), unit="step")
    controller.start()
    x, y = torch.randn(16, 1, 12), torch.randint(0, 4, (16,))
    for _ in range(6):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        controller.on_step()
        assert_pruned_are_zero(model)
