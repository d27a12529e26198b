"""secateurs.recovery.recalibrate_batchnorm: running statistics re-estimated after pruning, nothing else touched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.errors import PruningError
from secateurs.recovery import recalibrate_batchnorm


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


X = torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 4, (128,), generator=torch.Generator().manual_seed(2))


def test_running_means_become_those_of_the_data_and_nothing_else_changes():
    model = network().train()
    norm = model[1]
    norm.running_mean.fill_(5.0)
    norm.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    assert recalibrate_batchnorm(model, (X, Y), batch_size=32) == 2
    with torch.no_grad():
        conv = model[0](X)
    assert torch.allclose(norm.running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-5)  # equal batches: the data's mean
    assert torch.allclose(norm.running_var, conv.var(dim=(0, 2, 3)), rtol=0.1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert model.training and all(m.training for m in model.modules())  # train flags as they were
    assert norm.momentum == 0.1  # the momentum comes back


def test_dropout_stays_off_while_statistics_are_read():
    model = network().eval()
    twin = copy.deepcopy(model)
    recalibrate_batchnorm(model, (X,), batch_size=64)
    recalibrate_batchnorm(twin, (X,), batch_size=64, seed=5)  # another order over the same 128 samples
    # the same statistics up to batch composition (norm 1 normalises each batch by its own statistics meanwhile);
    # dropout noise after it would move them by far more
    assert torch.allclose(model[5].running_mean, twin[5].running_mean, atol=1e-3)
    assert not model.training


def test_after_shrinking_the_normalised_outputs_are_normalised_again():
    model = network().eval()
    recalibrate_batchnorm(model, (X,))
    sc.shrink(model, (X[:2],), 0.5)
    with torch.no_grad():  # the second norm's inputs changed: half of its input channels are gone
        stale = model[5](model[4](model[2](model[1](model[0](X))))).mean(dim=(0, 2, 3))
    recalibrate_batchnorm(model, (X,))
    with torch.no_grad():
        fresh = model[5](model[4](model[2](model[1](model[0](X))))).mean(dim=(0, 2, 3))
    bias = model[5].bias
    assert (fresh - bias).abs().max() < 1e-3 < 1e-2 < (stale - bias).abs().max()


def test_refusals_leave_the_model_alone():
    with pytest.raises(PruningError, match="no BatchNorm layer"):
        recalibrate_batchnorm(nn.Linear(4, 2), (torch.randn(8, 4),))
    model = network()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PruningError, match="num_samples=1"):
        recalibrate_batchnorm(model, (X,), num_samples=1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_a_failure_part_way_restores_the_statistics_and_a_last_single_sample_is_skipped():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    model[1].running_mean.fill_(3.0)
    recalibrate_batchnorm(model, (torch.randn(65, 4),), batch_size=64)  # 64 + 1: the lone sample is left out
    assert not torch.allclose(model[1].running_mean, torch.full((6,), 3.0))
    model[1].running_mean.fill_(3.0)
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(model, (torch.randn(128, 5),))  # the wrong width fails in the first layer
    assert torch.equal(model[1].running_mean, torch.full((6,), 3.0)) and model[1].momentum == 0.1


def test_norms_without_running_statistics_are_not_counted():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False))
    with pytest.raises(PruningError, match="keeps running statistics"):
        recalibrate_batchnorm(model, (torch.randn(8, 4),))
