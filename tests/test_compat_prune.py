"""secateurs.compat.prune against torch.nn.utils.prune: same masks for the same inputs, same exception
types for the same mistakes, and none of torch's faults (weight_orig, float masks, deepcopy, memory).

Weights are built without ties (distinct magnitudes, distinct channel norms), so torch's topk and
secateurs' ranking must agree exactly; random methods are checked for counts and structure only.
"""

from __future__ import annotations

import ast
import copy
import math
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune as tp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
import secateurs.compat.prune as sp

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def untied(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random-signed values whose magnitudes are all distinct, jittered so sums of them do not tie."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    magnitudes = (torch.randperm(n, generator=g).double() + 1 + torch.rand(n, generator=g, dtype=torch.float64) * 0.5) / n
    signs = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    return (magnitudes * signs).float().reshape(shape)


def make(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = {
        "linear": lambda: nn.Linear(12, 10),
        "conv1d": lambda: nn.Conv1d(4, 6, 3),
        "conv2d": lambda: nn.Conv2d(3, 6, 3),
        "conv3d": lambda: nn.Conv3d(2, 4, 2),
    }[kind]()
    with torch.no_grad():
        module.weight.copy_(untied(tuple(module.weight.shape), seed))
        module.bias.copy_(untied(tuple(module.bias.shape), seed + 1000))
    return module


KINDS = ["linear", "conv1d", "conv2d", "conv3d"]


def twins(kind: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(module for torch, identical module for secateurs)."""
    module = make(kind, seed)
    return copy.deepcopy(module), module


def assert_same(theirs: nn.Module, ours: nn.Module, name: str = "weight") -> None:
    their_mask = getattr(theirs, name + "_mask")
    our_mask = getattr(ours, name + "_mask")
    assert our_mask.dtype == torch.bool
    assert torch.equal(their_mask.bool(), our_mask), f"masks differ: {int((their_mask.bool() != our_mask).sum())} entries"
    assert torch.equal(getattr(theirs, name), getattr(ours, name))


def both(call: str, theirs: nn.Module, ours: nn.Module, *args, **kwargs) -> None:
    result_theirs = getattr(tp, call)(theirs, *args, **kwargs)
    result_ours = getattr(sp, call)(ours, *args, **kwargs)
    assert result_theirs is theirs and result_ours is ours


# --- one call, every function, every layer kind ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.77, 1.0, 0, 7])
def test_l1_unstructured_matches_torch(kind, amount):
    theirs, ours = twins(kind)
    both("l1_unstructured", theirs, ours, "weight", amount)
    assert_same(theirs, ours)
    both("l1_unstructured", theirs, ours, "bias", 0.5)
    assert_same(theirs, ours, "bias")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, math.inf, -math.inf, "fro", 0.5, -1])
def test_ln_structured_matches_torch_for_every_dim_and_norm(kind, n):
    for seed, amount in enumerate([0.34, 2, 0.5]):
        ndim = make(kind).weight.dim()
        for dim in [*range(ndim), -1, -ndim]:
            theirs, ours = twins(kind, seed)
            both("ln_structured", theirs, ours, "weight", amount, n=n, dim=dim)
            assert_same(theirs, ours)


def test_nuclear_norm_matches_torch_where_torch_supports_it():
    for dim in (0, 1, 2):
        theirs, ours = twins("conv1d", dim)
        both("ln_structured", theirs, ours, "weight", 0.5, n="nuc", dim=dim)
        assert_same(theirs, ours)
    with pytest.raises(ValueError, match="matrix norm"):
        sp.ln_structured(make("conv2d"), "weight", 0.5, n="nuc", dim=0)


@pytest.mark.parametrize("kind", KINDS)
def test_importance_scores_replace_the_weights_in_ranking(kind):
    theirs, ours = twins(kind)
    shape = tuple(ours.weight.shape)
    scores = untied(shape, 7)
    both("l1_unstructured", theirs, ours, "weight", 0.4, importance_scores=scores)
    assert_same(theirs, ours)
    both("ln_structured", theirs, ours, "weight", 0.34, n=2, dim=0, importance_scores=untied(shape, 8))
    assert_same(theirs, ours)
    both("l1_unstructured", theirs, ours, "weight", 5, importance_scores=untied(shape, 9))
    assert_same(theirs, ours)


@pytest.mark.parametrize("kind", KINDS)
def test_identity_and_custom_from_mask_match_torch(kind):
    theirs, ours = twins(kind)
    both("identity", theirs, ours, "weight")
    assert_same(theirs, ours)
    assert bool(ours.weight_mask.all())
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(ours.weight.shape, generator=g) > 0.3).float()
    both("custom_from_mask", theirs, ours, "weight", mask=mask)
    assert_same(theirs, ours)
    both("custom_from_mask", theirs, ours, "weight", mask=torch.rand(ours.weight.shape, generator=g) > 0.2)
    assert_same(theirs, ours)
    both("l1_unstructured", theirs, ours, "weight", 0.25)
    assert_same(theirs, ours)


# --- repeated pruning: amounts are fractions of what remains --------------------------------

STEPS = [
    ("l1_unstructured", (0.2,), {}),
    ("ln_structured", (0.3,), {"n": 2, "dim": 0}),
    ("l1_unstructured", (5,), {}),
    ("ln_structured", (1,), {"n": 1, "dim": 1}),
    ("ln_structured", (0.5,), {"n": math.inf, "dim": -1}),
    ("l1_unstructured", (0.5,), {}),
    ("ln_structured", (0.25,), {"n": "fro", "dim": 0}),
]


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_pruning_sequence_matches_torch_step_by_step(kind):
    theirs, ours = twins(kind, 5)
    for call, args, kwargs in STEPS:
        both(call, theirs, ours, "weight", *args, **kwargs)
        assert_same(theirs, ours)


def test_structured_repruning_skips_channels_already_pruned():
    theirs, ours = twins("linear", 2)
    for amount in (0.3, 0.3, 2, 0.5):
        both("ln_structured", theirs, ours, "weight", amount, n=2, dim=0)
        assert_same(theirs, ours)
    rows_alive = int(ours.weight_mask.any(dim=1).sum())
    assert rows_alive == 10 - 3 - round(0.3 * 7) - 2 - round(0.5 * 3)


def step_strategy(ndim: int):
    amount = st.one_of(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.8]), st.integers(0, 2))
    l1 = st.tuples(st.just("l1_unstructured"), amount, st.just({}))
    ln = st.tuples(
        st.just("ln_structured"),
        amount,
        st.fixed_dictionaries({"n": st.sampled_from([1, 2, math.inf, "fro"]), "dim": st.integers(-ndim, ndim - 1)}),
    )
    return st.one_of(l1, ln)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000))
def test_random_sequences_of_calls_match_torch(data, kind, seed):
    theirs, ours = twins(kind, seed)
    steps = data.draw(st.lists(step_strategy(ours.weight.dim()), min_size=1, max_size=5))
    for call, amount, kwargs in steps:
        try:
            getattr(tp, call)(theirs, "weight", amount, **kwargs)
        except ValueError:  # an int amount larger than what remains
            with pytest.raises(ValueError):
                getattr(sp, call)(ours, "weight", amount, **kwargs)
            return
        getattr(sp, call)(ours, "weight", amount, **kwargs)
        assert_same(theirs, ours)


def test_remove_keeps_zeros_and_later_pruning_starts_afresh_like_torch():
    theirs, ours = twins("conv2d", 4)
    both("l1_unstructured", theirs, ours, "weight", 0.5)
    both("remove", theirs, ours, "weight")
    assert not sp.is_pruned(ours) and not tp.is_pruned(theirs)
    assert torch.equal(theirs.weight, ours.weight) and not hasattr(ours, "weight_mask")
    assert isinstance(ours.weight, nn.Parameter)
    zeros = int((ours.weight == 0).sum())
    # the zeroed half ties at 0: prune exactly those and more, so the tie order cannot matter
    both("l1_unstructured", theirs, ours, "weight", zeros + 10)
    assert_same(theirs, ours)


# --- global pruning --------------------------------------------------------------------------


def modules(seed: int = 0) -> list[nn.Module]:
    return [make(kind, seed + i) for i, kind in enumerate(KINDS)]


@pytest.mark.parametrize("amounts", [[0.2], [0.5, 0.3], [40, 0.5, 13], [0.0, 1.0]])
def test_global_unstructured_matches_torch_across_layer_kinds(amounts):
    theirs, ours = modules(), modules()
    for amount in amounts:
        tp.global_unstructured([(m, "weight") for m in theirs], pruning_method=tp.L1Unstructured, amount=amount)
        assert sp.global_unstructured([(m, "weight") for m in ours], pruning_method=sp.L1Unstructured, amount=amount) is None
        for a, b in zip(theirs, ours):
            assert_same(a, b)


def test_global_after_local_pruning_and_with_biases_matches_torch():
    theirs, ours = modules(3), modules(3)
    for a, b in zip(theirs, ours):
        both("ln_structured", a, b, "weight", 0.25, n=2, dim=0)
    pairs = lambda ms: [(m, "weight") for m in ms] + [(m, "bias") for m in ms[:2]]  # noqa: E731
    tp.global_unstructured(pairs(theirs), pruning_method=tp.L1Unstructured, amount=0.4)
    sp.global_unstructured(pairs(ours), pruning_method=sp.L1Unstructured, amount=0.4)
    for a, b in zip(theirs, ours):
        assert_same(a, b)
    for a, b in zip(theirs[:2], ours[:2]):
        assert_same(a, b, "bias")


def test_global_importance_scores_and_torch_classes_are_accepted():
    theirs, ours = modules(6), modules(6)
    scores_theirs = {(theirs[i], "weight"): untied(tuple(theirs[i].weight.shape), 50 + i) for i in (0, 2)}
    scores_ours = {(ours[i], "weight"): untied(tuple(ours[i].weight.shape), 50 + i) for i in (0, 2)}
    tp.global_unstructured([(m, "weight") for m in theirs], tp.L1Unstructured, importance_scores=scores_theirs, amount=0.35)
    # torch's own class passed to secateurs runs on the engine all the same
    sp.global_unstructured([(m, "weight") for m in ours], tp.L1Unstructured, importance_scores=scores_ours, amount=0.35)
    for a, b in zip(theirs, ours):
        assert_same(a, b)


def test_global_accepts_a_generator_and_ranks_a_listed_twice_tensor_once():
    ours = modules(8)
    sp.global_unstructured(((m, "weight") for m in ours), pruning_method=sp.L1Unstructured, amount=0.5)
    total = sum(m.weight.numel() for m in ours)
    assert sum(int((~m.weight_mask).sum()) for m in ours) == round(0.5 * total)
    twice = modules(8)
    sp.global_unstructured([(m, "weight") for m in twice] + [(twice[0], "weight")], pruning_method=sp.L1Unstructured, amount=0.5)
    for a, b in zip(ours, twice):
        assert torch.equal(a.weight_mask, b.weight_mask)


def test_global_tied_weights_get_one_consistent_mask():
    shared = nn.Linear(6, 6)
    other = nn.Linear(6, 6)
    other.weight = shared.weight
    sp.global_unstructured([(shared, "weight"), (other, "weight")], pruning_method=sp.L1Unstructured, amount=10)
    assert int((~shared.weight_mask).sum()) == 10
    assert torch.equal(shared.weight_mask, other.weight_mask)


def test_random_methods_prune_the_right_counts_and_shapes_reproducibly():
    for seed in (0, 1):
        torch.manual_seed(seed)
        first = sp.random_unstructured(make("conv2d"), "weight", 0.3).weight_mask.clone()
        torch.manual_seed(seed)
        again = sp.random_unstructured(make("conv2d"), "weight", 0.3).weight_mask
        assert torch.equal(first, again)
        assert int((~first).sum()) == round(0.3 * first.numel())
    module = make("conv2d")
    sp.random_structured(module, "weight", 0.5, dim=1)
    sp.random_structured(module, "weight", 1, dim=1)
    alive = module.weight_mask.any(dim=(0, 2, 3))
    assert int(alive.sum()) == 3 - round(0.5 * 3) - 1
    assert torch.equal(module.weight_mask, alive.view(1, -1, 1, 1).expand_as(module.weight_mask))
    ms = modules(9)
    torch.manual_seed(0)
    sp.global_unstructured([(m, "weight") for m in ms], pruning_method=sp.RandomUnstructured, amount=0.25)
    total = sum(m.weight.numel() for m in ms)
    assert sum(int((~m.weight_mask).sum()) for m in ms) == round(0.25 * total)


# --- methods as objects, and methods users write themselves ---------------------------------


@pytest.mark.parametrize(
    "make_methods",
    [
        lambda lib: lib.L1Unstructured(0.4),
        lambda lib: lib.L1Unstructured(9),
        lambda lib: lib.LnStructured(0.5, n=2, dim=1),
        lambda lib: lib.LnStructured(2, n=1, dim=0),
        lambda lib: lib.Identity(),
    ],
)
def test_compute_mask_and_prune_of_method_objects_match_torch(make_methods):
    t = untied((6, 5, 3), 11)
    default = torch.ones_like(t)
    default[0] = 0
    default[:, :, 1] = 0
    theirs, ours = make_methods(tp), make_methods(sp)
    assert torch.equal(theirs.compute_mask(t, default_mask=default), ours.compute_mask(t, default_mask=default))
    assert torch.equal(theirs.prune(t), ours.prune(t))
    scores = untied((6, 5, 3), 12)
    assert torch.equal(theirs.prune(t, importance_scores=scores), ours.prune(t, importance_scores=scores))


class EveryOther(sp.BasePruningMethod):
    """The user-defined method of torch's tutorial, written against secateurs."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


class EveryOtherTorch(tp.BasePruningMethod):
    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


class LastChannels(sp.BasePruningMethod):
    PRUNING_TYPE = "structured"

    def __init__(self, dim):
        self.dim = dim

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.select(self.dim, t.shape[self.dim] - 1).zero_()
        return mask


class LastChannelsTorch(tp.BasePruningMethod):
    PRUNING_TYPE = "structured"

    def __init__(self, dim):
        self.dim = dim

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.select(self.dim, t.shape[self.dim] - 1).zero_()
        return mask


def test_user_defined_methods_run_through_their_compute_mask_like_torch():
    theirs, ours = twins("conv2d", 1)
    for _ in range(2):
        EveryOtherTorch.apply(theirs, "weight")
        EveryOther.apply(ours, "weight")
        assert_same(theirs, ours)
    for _ in range(2):
        LastChannelsTorch.apply(theirs, "weight", dim=0)
        LastChannels.apply(ours, "weight", dim=0)
        assert_same(theirs, ours)
    both("l1_unstructured", theirs, ours, "weight", 0.3)
    assert_same(theirs, ours)

    class Doubled(sp.L1Unstructured):  # a subclass of a built-in with its own compute_mask
        def compute_mask(self, t, default_mask):
            return super().compute_mask(t, default_mask) * EveryOther().compute_mask(t, default_mask)

    class DoubledTorch(tp.L1Unstructured):
        def compute_mask(self, t, default_mask):
            return super().compute_mask(t, default_mask) * EveryOtherTorch().compute_mask(t, default_mask)

    theirs, ours = twins("linear", 2)
    for amount in (0.25, 7):
        DoubledTorch.apply(theirs, "weight", amount=amount)
        Doubled.apply(ours, "weight", amount=amount)
        assert_same(theirs, ours)


def test_global_with_user_methods_follows_torch():
    for ours_cls in (EveryOther, EveryOtherTorch):
        theirs, ours = modules(2), modules(2)
        tp.global_unstructured([(m, "weight") for m in theirs], pruning_method=EveryOtherTorch)
        sp.global_unstructured([(m, "weight") for m in ours], pruning_method=ours_cls)
        for a, b in zip(theirs, ours):
            assert_same(a, b)


# --- bad input: torch's exception types, secateurs' messages, model untouched ---------------


def linear_pruned_once(lib) -> nn.Linear:
    module = make("linear")
    lib.l1_unstructured(module, "weight", 0.5)
    return module


ERRORS = [
    ("amount of the wrong type", lambda lib: lib.l1_unstructured(make("linear"), "weight", "0.3"), TypeError),
    ("bool amount", lambda lib: lib.l1_unstructured(make("linear"), "weight", True), TypeError),
    ("negative count", lambda lib: lib.l1_unstructured(make("linear"), "weight", -1), ValueError),
    ("fraction above 1", lambda lib: lib.l1_unstructured(make("linear"), "weight", 1.5), ValueError),
    ("count above size", lambda lib: lib.l1_unstructured(make("linear"), "weight", 121), ValueError),
    ("count above what remains", lambda lib: lib.l1_unstructured(linear_pruned_once(lib), "weight", 61), ValueError),
    ("channels above what remain", lambda lib: lib.ln_structured(make("linear"), "weight", 11, n=2, dim=0), ValueError),
    ("dim too large", lambda lib: lib.ln_structured(make("linear"), "weight", 0.3, n=2, dim=2), IndexError),
    ("dim too negative", lambda lib: lib.ln_structured(make("linear"), "weight", 0.3, n=2, dim=-3), IndexError),
    ("random dim too large", lambda lib: lib.random_structured(make("conv2d"), "weight", 0.3, dim=4), IndexError),
    ("dim not an int", lambda lib: lib.ln_structured(make("linear"), "weight", 0.3, n=2, dim="a"), TypeError),
    ("norm not a number", lambda lib: lib.ln_structured(make("linear"), "weight", 0.3, n="abc", dim=0), TypeError),
    ("structured on 1-D", lambda lib: lib.ln_structured(make("linear"), "bias", 0.3, n=2, dim=0), ValueError),
    ("misspelled parameter", lambda lib: lib.l1_unstructured(make("linear"), "wieght", 0.3), AttributeError),
    ("absent bias", lambda lib: lib.l1_unstructured(nn.Linear(3, 3, bias=False), "bias", 0.3), TypeError),
    ("remove unpruned", lambda lib: lib.remove(make("linear"), "weight"), ValueError),
    ("global structured method", lambda lib: lib.global_unstructured([(make("linear"), "weight")], lib.LnStructured, amount=0.3, n=2, dim=0), TypeError),
    ("global custom mask method", lambda lib: lib.global_unstructured([(make("linear"), "weight")], lib.CustomFromMask, mask=torch.ones(10, 12)), TypeError),
    ("global not iterable", lambda lib: lib.global_unstructured(5, lib.L1Unstructured, amount=0.3), TypeError),
    ("global scores not a dict", lambda lib: lib.global_unstructured([(make("linear"), "weight")], lib.L1Unstructured, importance_scores=[1], amount=0.3), TypeError),
    ("global count above size", lambda lib: lib.global_unstructured([(make("linear"), "weight")], lib.L1Unstructured, amount=121), ValueError),
    ("global misspelled parameter", lambda lib: lib.global_unstructured([(make("linear"), "wieght")], lib.L1Unstructured, amount=0.3), AttributeError),
]


@pytest.mark.parametrize("what,call,expected", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_the_exception_type_torch_raises(what, call, expected):
    with pytest.raises(expected):
        call(tp)
    with pytest.raises(expected) as info:
        call(sp)
    assert isinstance(info.value, sc.SecateursError), f"{what}: {info.value!r} is not secateurs' own error"


AMBIGUOUS = [  # torch raises AssertionError; a ValueError is what these mistakes are
    lambda lib: lib.custom_from_mask(make("linear"), "weight", torch.ones(10)),
    lambda lib: lib.l1_unstructured(make("linear"), "weight", 0.3, importance_scores=torch.ones(3)),
    lambda lib: lib.ln_structured(make("linear"), "weight", 0.3, n=2, dim=0, importance_scores=torch.ones(3)),
]


@pytest.mark.parametrize("call", AMBIGUOUS)
def test_shape_mismatches_are_value_errors_where_torch_asserts(call):
    with pytest.raises(AssertionError):
        call(tp)
    with pytest.raises(ValueError, match="shape"):
        call(sp)


def test_a_failed_call_leaves_the_module_exactly_as_it_was():
    module = make("conv2d")
    sp.l1_unstructured(module, "weight", 0.3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    mask = module.weight_mask.clone()
    for bad in (
        lambda: sp.l1_unstructured(module, "weight", 1000),
        lambda: sp.ln_structured(module, "weight", 0.3, n=2, dim=7),
        lambda: sp.custom_from_mask(module, "weight", torch.full(module.weight.shape, 0.5)),
        lambda: sp.l1_unstructured(module, "weight", 0.3, importance_scores=torch.full(module.weight.shape, math.nan)),
    ):
        with pytest.raises(sc.SecateursError):
            bad()
        assert torch.equal(module.weight_mask, mask)
        for key, value in module.state_dict().items():
            assert torch.equal(value, before[key])
    with torch.no_grad():
        module.bias[0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        sp.l1_unstructured(module, "bias", 0.3)
    assert not hasattr(module, "bias_mask")


def test_modules_without_parameters_are_skipped_with_a_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    with pytest.warns(UserWarning, match="holds no parameters"):
        for _, module in model.named_modules():
            sp.l1_unstructured(module, "weight", 0.5)
    assert sp.is_pruned(model)
    with pytest.warns(UserWarning, match="holds no parameters"):
        for _, module in model.named_modules():
            sp.remove(module, "weight")
    assert not sp.is_pruned(model)


def test_a_module_pruned_by_torch_gets_a_pointer_to_torchs_remove():
    module = make("linear")
    tp.l1_unstructured(module, "weight", 0.3)
    with pytest.raises(ValueError, match="torch.nn.utils.prune.remove"):
        sp.l1_unstructured(module, "weight", 0.3)
    with pytest.raises(ValueError, match="torch's remove"):
        sp.remove(module, "weight")


# --- what torch.nn.utils.prune gets wrong --------------------------------------------------


def test_no_weight_orig_bool_masks_and_unchanged_state_dict_keys():
    model = nn.Sequential(make("conv2d"), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    keys = list(model.state_dict())
    sp.ln_structured(model[0], "weight", 0.5, n=2, dim=0)
    sp.l1_unstructured(model[2], "weight", 0.5)
    assert list(model.state_dict()) == keys
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert model[0].weight_mask.dtype == torch.bool
    fresh = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_pruned_models_deepcopy_pickle_and_keep_training_zeros():
    model = nn.Sequential(make("linear"), nn.ReLU(), nn.Linear(10, 2))
    sp.global_unstructured([(model[0], "weight"), (model[2], "weight")], pruning_method=sp.L1Unstructured, amount=0.5)
    twin = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for other in (twin, restored):
        assert torch.equal(other[0].weight_mask, model[0].weight_mask)
        assert torch.equal(other[0].weight, model[0].weight)
    optimizer = torch.optim.AdamW(twin.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        twin(torch.randn(8, 12)).pow(2).sum().backward()
        optimizer.step()
    assert bool((twin[0].weight[~twin[0].weight_mask] == 0).all())


def test_outputs_match_torch_pruned_modules():
    theirs, ours = twins("conv2d", 3)
    both("ln_structured", theirs, ours, "weight", 0.5, n=2, dim=0)
    both("l1_unstructured", theirs, ours, "weight", 0.3)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(theirs(x), ours(x))


def test_mask_memory_is_one_byte_per_weight_and_nothing_is_duplicated():
    module = nn.Linear(256, 128)
    before = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    sp.l1_unstructured(module, "weight", 0.5)
    after = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    assert after - before == module.weight.numel()  # the bool mask, nothing else
    theirs = nn.Linear(256, 128)
    tp.l1_unstructured(theirs, "weight", 0.5)
    torch_after = sum(t.numel() * t.element_size() for t in [*theirs.parameters(), *theirs.buffers()])
    assert torch_after - before == 4 * module.weight.numel()  # a float mask (plus weight_orig outside parameters)


GLOBAL_MEMORY = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    import {module} as prune
    torch.manual_seed(0)
    warm = [nn.Linear(64, 64) for _ in range(2)]  # first-use costs of torch and the library are not pruning's
    prune.global_unstructured([(m, "weight") for m in warm], pruning_method=prune.L1Unstructured, amount=0.5)
    layers = [nn.Linear(1024, 1024, bias=False) for _ in range(16)]  # 16.8M weights, 64 MiB
    def hwm():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
    open("/proc/self/clear_refs", "w").write("5")
    base = hwm()
    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=0.5)
    print((hwm() - base) / (16 * 1024 * 1024 * 4))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory")
def test_global_pruning_needs_a_fraction_of_the_model_in_extra_memory():
    def extra(module: str) -> float:
        out = subprocess.run([sys.executable, "-c", GLOBAL_MEMORY.format(module=module)], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())

    ours = extra("secateurs.compat.prune")
    assert ours < 0.4, f"secateurs needed {ours:.2f}x the model in extra memory (its bool masks are 0.25x)"
    assert extra("torch.nn.utils.prune") > 10 * ours


# --- the torch.nn.utils.prune snippets of the reference articles, with one import changed ---


def article_snippets() -> list[tuple[str, str]]:
    """Runnable code in the articles under ../shared/seeds: fenced blocks, and runs of lines that parse
    as Python starting at an import, a loop or a model assignment. Flattened HTML (newlines lost) yields none."""
    found = []
    for path in sorted(SEEDS.glob("*.txt")):
        text = path.read_text(errors="replace")
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        lines = text.splitlines()
        i = 0
        while not blocks and i < len(lines):
            if re.match(r"(import |from |for |model\s*=)", lines[i]):
                for j in range(min(len(lines), i + 60), i, -1):
                    chunk = "\n".join(lines[i:j])
                    try:
                        ast.parse(chunk)
                    except SyntaxError:
                        continue
                    if "prune" in chunk and chunk.count("\n") >= 3:
                        found.append((path.name, chunk))
                        i = j - 1
                    break
            i += 1
        found += [(path.name, block) for block in blocks if "prune" in block or "remove(" in block]
    return found


def switch_import(code: str) -> str:
    """The one line a user changes."""
    code = code.replace("import torch.nn.utils.prune as prune", "import secateurs.compat.prune as prune")
    code = code.replace("from torch.nn.utils import prune", "from secateurs.compat import prune")
    return re.sub(r"from torch\.nn\.utils(?:\.prune)? import", "from secateurs.compat.prune import", code)


class OurAwesomeNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.features(x))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        for i, layer in enumerate(model):
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(untied(tuple(layer.weight.shape), i))
    return model


def run_article(snippets: list[str], model: nn.Module) -> nn.Module:
    """Run an article's snippets in order in one namespace: later ones continue the earlier ones."""
    namespace = {"model": model, "OurAwesomeNetwork": OurAwesomeNetwork, "num_epochs": 20, "__name__": "snippet"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for code in snippets:
            code = re.sub(r"^model = \.\.\..*$", "model = given_model", code, flags=re.M)
            namespace["given_model"] = model
            exec(compile(code, "<article snippet>", "exec"), namespace)
    return namespace["model"]


@pytest.mark.skipif(not SEEDS.is_dir(), reason="reference articles not present (../shared/seeds)")
def test_article_snippets_run_unchanged_but_for_the_import():
    articles: dict[str, list[str]] = {}
    for name, code in article_snippets():
        articles.setdefault(name, []).append(code)
    assert sum(map(len, articles.values())) >= 3, "expected the snippets of the pruning articles"
    for name, snippets in articles.items():
        ours = run_article([switch_import(code) for code in snippets], mlp())
        assert not sp.is_pruned(ours), f"{name}: the snippets remove their pruning at the end"
        weights = [p for n, p in ours.named_parameters() if n.endswith("weight") and p.dim() > 1]
        assert weights and all(bool((p == 0).any()) for p in weights), name
        fresh = OurAwesomeNetwork() if isinstance(ours, OurAwesomeNetwork) else mlp()
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in fresh.named_parameters()], name
        if "import torch.nn.utils.prune as prune" in snippets[0]:  # runs on torch as written: compare
            theirs = dict(run_article(snippets, mlp()).named_parameters())  # torch reorders parameters
            for n, b in ours.named_parameters():
                assert torch.equal(theirs[n], b), f"{name}: {n} differs from torch's result"


def test_the_usual_migration_patterns_run_with_one_import_changed():
    """The calls the articles make, on a model: per-layer L1 then remove, global L1 with the class, then remove."""
    theirs, ours = mlp(), mlp()
    for lib, model in ((tp, theirs), (sp, ours)):
        for _, module in model.named_modules():
            if isinstance(module, nn.Linear):
                lib.l1_unstructured(module, name="weight", amount=0.2)
                lib.remove(module, "weight")
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        lib.global_unstructured([(m, "weight") for m in linears], pruning_method=lib.L1Unstructured, amount=0.5)
        for module in linears:
            lib.remove(module, "weight")
    reordered = dict(theirs.named_parameters())  # torch moves each pruned weight behind its bias
    assert list(reordered) != [n for n, _ in ours.named_parameters()] == [n for n, _ in mlp().named_parameters()]
    for n, b in ours.named_parameters():
        assert torch.equal(reordered[n], b), n
