"""Masks: real zeros, cheap bool buffers, and pruned weights that stay zero through training and copying."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.core import masks


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def random_keep(shape, seed=1, p=0.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) > p


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    x = torch.randn(5, 6)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()


def assert_pruned_zero(module: nn.Module, name: str = "weight") -> None:
    keep = masks.get_mask(module, name)
    assert keep is not None
    assert torch.all(getattr(module, name)[~keep] == 0)


def test_set_mask_writes_zeros_and_a_bool_buffer_without_changing_state_dict_keys():
    model = small_net()
    keys = list(model.state_dict())
    keep = random_keep(model[0].weight.shape)
    before = model[0].weight.detach().clone()
    masks.set_mask(model[0], "weight", keep)
    assert model[0].weight_mask.dtype == torch.bool
    assert torch.equal(model[0].weight[keep], before[keep])
    assert torch.all(model[0].weight[~keep] == 0)
    assert list(model.state_dict()) == keys
    assert not hasattr(model[0], "weight_orig")
    assert isinstance(model[0].weight, nn.Parameter)


def test_pruned_positions_receive_no_gradient():
    model = small_net()
    masks.set_mask(model[0], "weight", random_keep(model[0].weight.shape))
    model(torch.randn(3, 6)).sum().backward()
    assert torch.all(model[0].weight.grad[~model[0].weight_mask] == 0)
    assert model[0].weight.grad[model[0].weight_mask].abs().sum() > 0


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adamw_decay": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
    "adamw_foreach_off": lambda p: torch.optim.AdamW(p, lr=0.05, foreach=False),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_pruned_weights_stay_zero_through_optimizer_steps_even_with_prior_state(make_optimizer):
    model = small_net()
    optimizer = make_optimizer(model.parameters())
    train_steps(model, optimizer)  # momentum / moments now non-zero everywhere
    sc.prune(model, 0.6, include_output=True)
    train_steps(model, optimizer, steps=4)
    for layer in (model[0], model[2]):
        assert_pruned_zero(layer)
        kept = layer.weight[layer.weight_mask]
        assert torch.all(kept != 0)


@pytest.mark.parametrize("copier", ["deepcopy", "pickle", "torch_save"])
def test_masks_survive_copies_and_stay_enforced(copier):
    model = small_net()
    sc.prune(model, 0.5, include_output=True)
    if copier == "deepcopy":
        clone = copy.deepcopy(model)
    elif copier == "pickle":
        clone = pickle.loads(pickle.dumps(model))
    else:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        clone = torch.load(buffer, weights_only=False)
    assert sc.is_pruned(clone)
    assert torch.equal(clone[0].weight_mask, model[0].weight_mask)
    assert clone[0].weight_mask is not model[0].weight_mask
    optimizer = torch.optim.SGD(clone.parameters(), lr=0.5, momentum=0.9)
    train_steps(clone, optimizer)
    assert_pruned_zero(clone[0])
    assert_pruned_zero(clone[2])
    assert torch.all(clone[0].weight.grad[~clone[0].weight_mask] == 0)


def test_state_dict_of_pruned_model_loads_into_unpruned_architecture():
    model = small_net()
    sc.prune(model, 0.5)
    fresh = small_net()
    fresh.load_state_dict(model.state_dict())  # strict: same keys
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert not sc.is_pruned(fresh)


def test_load_state_dict_into_pruned_model_keeps_its_mask():
    model = small_net()
    sc.prune(model, 0.5)
    dense = small_net()
    model.load_state_dict(dense.state_dict())
    assert_pruned_zero(model[0])
    keep = model[0].weight_mask
    assert torch.equal(model[0].weight[keep], dense[0].weight[keep])


def test_finalize_drops_masks_and_hooks_but_keeps_zeros():
    model = small_net()
    sc.prune(model, 0.5)
    zeros = model[0].weight == 0
    assert sc.finalize(model) == 1
    assert not sc.is_pruned(model)
    assert not hasattr(model[0], "weight_mask")
    assert not model[0]._forward_pre_hooks and not model[0]._load_state_dict_post_hooks
    assert torch.equal(model[0].weight == 0, zeros)
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert (model[0].weight[zeros] != 0).any()  # no longer held at zero
    model(torch.randn(2, 6)).sum().backward()
    assert model[0].weight.grad[zeros].abs().sum() > 0


def test_remove_mask_on_unpruned_parameter_is_an_error():
    model = small_net()
    with pytest.raises(sc.PruningError, match="not pruned"):
        masks.remove_mask(model[0], "weight")


def test_set_mask_rejects_bad_masks_without_touching_the_module():
    model = small_net()
    before = model[0].weight.detach().clone()
    with pytest.raises(sc.PruningError, match="bool"):
        masks.set_mask(model[0], "weight", torch.ones_like(model[0].weight))
    with pytest.raises(sc.PruningError, match="shape"):
        masks.set_mask(model[0], "weight", torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(sc.PruningError, match="no parameter"):
        masks.set_mask(model[0], "nope", torch.ones(3, dtype=torch.bool))
    assert torch.equal(model[0].weight, before)
    assert not sc.is_pruned(model)


def test_foreign_attribute_named_like_a_mask_is_refused():
    model = small_net()
    model[0].register_buffer("weight_mask", torch.zeros(1))
    with pytest.raises(sc.PruningError, match="rename"):
        sc.prune(model, 0.5)
    assert torch.count_nonzero(model[0].weight) == model[0].weight.numel()


def test_tied_parameters_share_one_mask_and_are_pruned_once():
    torch.manual_seed(0)
    first, second = nn.Linear(8, 8), nn.Linear(8, 8)
    second.weight = first.weight
    model = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), nn.Linear(8, 2))
    report = sc.prune(model, 0.5)
    assert [layer.name for layer in report.layers] == ["0.weight"]
    assert model[2].weight_mask is model[0].weight_mask
    clone = copy.deepcopy(model)
    assert clone[2].weight is clone[0].weight and clone[2].weight_mask is clone[0].weight_mask
    assert int((model[0].weight == 0).sum()) == 32


def test_mask_state_dict_round_trip_restores_masks_on_a_fresh_model():
    model = small_net()
    sc.prune(model, 0.7, include_output=True)
    saved_masks = masks.mask_state_dict(model)
    assert all(t.dtype == torch.uint8 for t in saved_masks.values())
    fresh = small_net()
    fresh.load_state_dict(model.state_dict())
    masks.load_mask_state_dict(fresh, saved_masks)
    for layer, original in ((fresh[0], model[0]), (fresh[2], model[2])):
        assert torch.equal(layer.weight_mask, original.weight_mask)
    with pytest.raises(sc.PruningError, match="unknown parameters"):
        masks.load_mask_state_dict(fresh, {"missing.weight": saved_masks["0.weight"]})


def test_masks_follow_dtype_and_device_conversion():
    model = small_net()
    sc.prune(model, 0.5)
    model.to(torch.float64)
    assert model[0].weight.dtype == torch.float64 and model[0].weight_mask.dtype == torch.bool
    train_steps_64 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 6, dtype=torch.float64)
    for _ in range(2):
        train_steps_64.zero_grad()
        model(x).sum().backward()
        train_steps_64.step()
    assert_pruned_zero(model[0])


def test_enforce_rezeroes_after_manual_edits():
    model = small_net()
    sc.prune(model, 0.5)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    assert masks.enforce(model) == 1
    assert_pruned_zero(model[0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=70), st.integers(1, 3))
def test_pack_unpack_round_trip(bits, rows):
    mask = torch.tensor(bits * rows, dtype=torch.bool).reshape(rows, len(bits))
    packed = masks.pack_mask(mask)
    assert packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(masks.unpack_mask(packed, mask.shape), mask)
