"""Properties of the pruning engine, checked on many generated models, amounts and score patterns.

The reference for every ranking is a brute-force sort over all eligible entries with the documented
tie-break: lower score first, then earlier parameter (in selection order), then lower flat index.
Heavy ties come from integer-valued weights; the streaming bracket path of the ranking is forced by
shrinking its sample and chunk sizes.
"""

from __future__ import annotations

import copy
import math
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import secateurs as sc
from secateurs.core import ranking
from secateurs.core.masks import masked_parameters

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def weights(shape: tuple[int, ...], seed: int, ties: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if ties:  # a handful of distinct magnitudes: most scores tie with many others
        return (torch.randint(-3, 4, shape, generator=g)).float()
    return torch.randn(shape, generator=g)


def mlp(seed: int, ties: bool, widths: tuple[int, ...] = (6, 9, 5, 7)) -> nn.Sequential:
    layers = [nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.copy_(weights(tuple(layer.weight.shape), seed + i, ties))
    return nn.Sequential(*layers)


def convnet(seed: int, ties: bool) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.Linear(8, 8))
    with torch.no_grad():
        for i, module in enumerate(model):
            if hasattr(module, "weight"):
                module.weight.copy_(weights(tuple(module.weight.shape), seed + i, ties))
    return model


def pruned(model: nn.Module) -> dict[str, torch.Tensor]:
    """Which weights are pruned (True), from the masks (unmasked parameters: nothing pruned)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            mask = sc.get_mask(module, "weight")
            out[f"{name}.weight"] = torch.zeros_like(module.weight, dtype=torch.bool) if mask is None else ~mask
    return out


def brute_force(scores: list[torch.Tensor], keeps: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """New keeps: prune the k lowest eligible entries, ties by source order then flat index."""
    entries = [
        (float(s), source, index)
        for source, (values, keep) in enumerate(zip(scores, keeps))
        for index, (s, kept) in enumerate(zip(values.reshape(-1).tolist(), keep.reshape(-1).tolist()))
        if kept
    ]
    entries.sort()
    result = [keep.clone().reshape(-1) for keep in keeps]
    for _, source, index in entries[:k]:
        result[source][index] = False
    return result


# --- the ranking itself: exact k lowest, documented tie-break, bounded passes ------------------


@st.composite
def ranking_case(draw):
    count = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 300)) for _ in range(count)]
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    scores = [weights((n,), seed + i, ties) for i, n in enumerate(sizes)]
    g = torch.Generator().manual_seed(seed)
    keep_fraction = draw(st.sampled_from([1.0, 0.9, 0.5, 0.1]))
    keeps = [torch.rand(n, generator=g) < keep_fraction for n in sizes]
    eligible = sum(int(k.sum()) for k in keeps)
    k = draw(st.integers(0, eligible))
    return scores, keeps, k


@SETTINGS
@given(case=ranking_case(), chunk=st.integers(3, 64), sample=st.sampled_from([8, 16, 64, 1 << 20]), streamed=st.booleans())
def test_prune_lowest_equals_a_brute_force_sort_with_the_documented_tie_break(case, chunk, sample, streamed):
    scores, keeps, k = case
    expected = brute_force([s.abs() for s in scores], keeps, k)
    sources = [ranking.StreamedScores(s, torch.abs) if streamed else ranking.TensorScores(s.abs()) for s in scores]
    got = [keep.clone() for keep in keeps]
    with mock.patch.object(ranking, "CHUNK", chunk), mock.patch.object(ranking, "SAMPLE_SIZE", sample):
        ranking.prune_lowest(sources, got, k)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_prune_lowest_handles_a_tie_block_larger_than_the_bracket():
    # 70% zeros: the threshold is the tied value itself, found by counting, not by collecting
    values = torch.cat([torch.zeros(7000), torch.rand(3000) + 1])
    values = values[torch.randperm(10_000, generator=torch.Generator().manual_seed(0))]
    for k in (10, 6999, 7000, 7001, 9000):
        keep = torch.ones(10_000, dtype=torch.bool)
        with mock.patch.object(ranking, "CHUNK", 97), mock.patch.object(ranking, "SAMPLE_SIZE", 256):
            ranking.prune_lowest([ranking.TensorScores(values)], [keep], k)
        assert torch.equal(keep, brute_force([values], [torch.ones(10_000, dtype=torch.bool)], k)[0])


@pytest.mark.parametrize("ties", [False, True])
def test_a_bracket_that_misses_the_threshold_is_widened_until_it_holds_it(ties):
    values = weights((5000,), 3, ties).abs()
    keep = torch.rand(5000, generator=torch.Generator().manual_seed(1)) < 0.8
    real = ranking._bracket
    wrong = iter([(-math.inf, float(values.min()) - 1), (float(values.max()) + 1, math.inf)])  # below, then above

    def bracket(sample, k, eligible, widen):
        return next(wrong) if widen < 16 else real(sample, k, eligible, widen)

    for k in (1, 1234, int(keep.sum()) - 1):
        wrong = iter([(-math.inf, float(values.min()) - 1), (float(values.max()) + 1, math.inf)])
        got = keep.clone()
        with mock.patch.object(ranking, "_bracket", bracket), mock.patch.object(ranking, "SAMPLE_SIZE", 64):
            ranking.prune_lowest([ranking.TensorScores(values)], [got], k)
        assert torch.equal(got, brute_force([values], [keep], k)[0])


# --- the engine: global ranking, amounts, rounding ---------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), amount=st.floats(0, 1), first=st.floats(0, 0.6))
def test_global_scope_prunes_what_a_brute_force_sort_of_all_weights_prunes(seed, ties, amount, first):
    model = mlp(seed, ties)
    sc.prune(model, first, include_output=True, allow_noop=True)  # existing masks: pruned weights are not eligible again
    before = pruned(model)
    names = list(before)
    params = [model.get_submodule(n.rsplit(".", 1)[0]).weight.detach().abs() for n in names]
    keeps = [~before[n] for n in names]
    total = sum(p.numel() for p in params)
    k = max(0, round(amount * total) - sum(int(m.sum()) for m in before.values()))
    expected = brute_force(params, keeps, k)
    sc.prune(model, amount, scope="global", include_output=True, allow_noop=True)
    after = pruned(model)
    for name, keep in zip(names, expected):
        assert torch.equal(~after[name].reshape(-1), keep), name


@SETTINGS
@given(seed=st.integers(0, 2**16), a1=st.floats(0, 1), a2=st.floats(0, 1), granularity=st.sampled_from(["unstructured", "out", "in"]))
def test_absolute_amounts_are_targets_and_relative_ones_fractions_of_what_remains(seed, a1, a2, granularity):
    def pruned_groups(model):
        layer = model[0]
        if granularity == "unstructured":
            return int((layer.weight == 0).sum()), layer.weight.numel()
        dim = 0 if granularity == "out" else 1
        alive = (layer.weight != 0).any(dim=1 - dim)
        return int((~alive).sum()), alive.numel()

    absolute, relative = mlp(seed, False), mlp(seed, False)
    for model, mode in ((absolute, "absolute"), (relative, "relative")):
        sc.prune(model, a1, granularity=granularity, include="0.weight", mode=mode, allow_noop=True)
        sc.prune(model, a2, granularity=granularity, include="0.weight", mode=mode, allow_noop=True)
    zeros, groups = pruned_groups(absolute)
    assert zeros == max(round(a1 * groups), round(a2 * groups))
    zeros, groups = pruned_groups(relative)
    first = round(a1 * groups)
    assert zeros == first + round(a2 * (groups - first))


def test_absolute_example_half_after_three_tenths_is_half():
    model = mlp(0, False)
    sc.prune(model, 0.3, include_output=True, allow_noop=True)
    report = sc.prune(model, 0.5, include_output=True, allow_noop=True)
    for layer in report.layers:
        assert layer.zeros_after == round(0.5 * layer.params)


@pytest.mark.parametrize("amount,count", [(0.25, 2), (0.35, 4), (0.45, 4), (0.15, 2), (0.05, 0)])
def test_fractions_round_half_to_even(amount, count):
    layer = nn.Linear(5, 2)  # 10 weights: amount * 10 lands on x.5
    sc.prune(nn.Sequential(layer, nn.Linear(2, 2)), amount, include="0.weight", allow_noop=True)
    assert int((layer.weight == 0).sum()) == count == round(amount * 10)


@SETTINGS
@given(n=st.integers(1, 40), amount=st.floats(0, 1), count=st.integers(0, 40))
def test_counts_are_exact_for_fractions_and_ints(n, amount, count):
    assume(count <= n * 3)
    model = nn.Sequential(nn.Linear(n, 3), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(3, n))
    first = copy.deepcopy(model)
    sc.prune(first, amount, include="0.weight", allow_noop=True)
    assert int((~first[0].weight_mask).sum()) == round(amount * 3 * n)
    second = copy.deepcopy(model)
    sc.prune(second, count, include="0.weight", allow_noop=True)
    assert int((~second[0].weight_mask).sum()) == count


# --- determinism -------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), granularity=st.sampled_from(["unstructured", "out", "in", "2:4"]), scope=st.sampled_from(["local", "global"]))
def test_random_criterion_is_reproducible_from_a_seed_or_torch_manual_seed(seed, granularity, scope):
    assume(not (granularity == "2:4" and scope == "global"))
    amount = None if granularity == "2:4" else 0.5
    base = mlp(1, False, widths=(8, 12, 8, 4))
    runs = []
    for _ in range(2):
        model = copy.deepcopy(base)
        sc.prune(model, amount, method="random", seed=seed, granularity=granularity, scope=scope, include_output=True, allow_noop=True)
        runs.append(pruned(model))
    for _ in range(2):
        model = copy.deepcopy(base)
        torch.manual_seed(seed)
        sc.prune(model, amount, method="random", granularity=granularity, scope=scope, include_output=True, allow_noop=True)
        runs.append(pruned(model))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name])
        assert torch.equal(runs[2][name], runs[3][name])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), ties=st.booleans(), granularity=st.sampled_from(["unstructured", "out", "in", "2:4"]))
def test_deterministic_criteria_give_the_same_masks_every_time(seed, ties, granularity):
    amount = None if granularity == "2:4" else 0.4
    a, b = convnet(seed, ties), convnet(seed, ties)
    sc.prune(a, amount, granularity=granularity, include_output=True, allow_noop=True)
    sc.prune(b, amount, granularity=granularity, include_output=True, allow_noop=True)
    for (name, x), y in zip(pruned(a).items(), pruned(b).values()):
        assert torch.equal(x, y), name


# --- patterns ----------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)]), first=st.floats(0, 0.5))
def test_n_m_blocks_along_the_input_dim_keep_at_most_n(seed, ties, nm, first):
    n, m = nm
    model = nn.Sequential(nn.Linear(16, 6), nn.Conv2d(16, 4, 3), nn.Conv1d(8, 3, 2))
    with torch.no_grad():
        for i, module in enumerate(model):
            module.weight.copy_(weights(tuple(module.weight.shape), seed + i, ties))
    sc.prune(model, first, types=[nn.Linear, nn.Conv2d, nn.Conv1d], include_output=True, allow_noop=True)
    before = {k: v.clone() for k, v in pruned(model).items()}
    sc.prune(model, granularity=f"{n}:{m}", types=[nn.Linear, nn.Conv2d, nn.Conv1d], include_output=True, allow_noop=True)
    after = pruned(model)
    for name, module in model.named_children():
        nonzero = (module.weight != 0).movedim(1, -1).reshape(-1, m)
        assert int(nonzero.sum(dim=-1).max()) <= n, name
        assert bool((after[f"{name}.weight"] >= before[f"{name}.weight"]).all())  # never revived
        # exactly N of M kept where nothing was pruned before
        kept = (~after[f"{name}.weight"]).movedim(1, -1).reshape(-1, m).sum(dim=-1)
        fresh = (~before[f"{name}.weight"]).movedim(1, -1).reshape(-1, m).all(dim=-1)
        assert bool((kept[fresh] == n).all()) and bool((kept <= n).all())


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), granularity=st.sampled_from(["out", "in"]), amount=st.floats(0, 1), scope=st.sampled_from(["local", "global"]))
def test_structured_pruning_zeroes_whole_rows_or_columns_and_leaves_the_rest(seed, ties, granularity, amount, scope):
    model = convnet(seed, ties)
    original = copy.deepcopy(model)
    sc.prune(model, amount, granularity=granularity, scope=scope, include_output=True, allow_noop=True)
    for (name, module), (_, before) in zip(model.named_children(), original.named_children()):
        if not hasattr(module, "weight"):
            continue
        dim = 0 if granularity == "out" else 1
        w, w0 = module.weight.detach().movedim(dim, 0), before.weight.detach().movedim(dim, 0)
        for row, row0 in zip(w, w0):
            assert bool((row == 0).all()) or torch.equal(row, row0), name


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), amount=st.one_of(st.floats(0, 1), st.integers(0, 40)), granularity=st.sampled_from(["unstructured", "out", "in"]))
def test_global_scope_on_one_tensor_equals_local_scope(seed, ties, amount, granularity):
    assume(granularity == "unstructured" or isinstance(amount, float) or amount <= 5)  # 1.weight is 5x9
    local, pooled = mlp(seed, ties), mlp(seed, ties)
    sc.prune(local, amount, granularity=granularity, include="1.weight", scope="local", allow_noop=True)
    sc.prune(pooled, amount, granularity=granularity, include="1.weight", scope="global", allow_noop=True)
    assert torch.equal(local[1].weight_mask, pooled[1].weight_mask)


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), amount=st.floats(0, 1), override=st.floats(0, 1))
def test_per_layer_amounts_in_global_scope_are_local_and_the_rest_ranked_together(seed, ties, amount, override):
    model, reference = mlp(seed, ties), mlp(seed, ties)
    sc.prune(model, amount, scope="global", per_layer={"1.weight": override}, include_output=True, allow_noop=True)
    sc.prune(reference, override, include="1.weight", allow_noop=True)
    assert torch.equal(model[1].weight_mask, reference[1].weight_mask)
    others = [model[0].weight_mask, model[2].weight_mask]
    assert sum(int((~m).sum()) for m in others) == round(amount * sum(m.numel() for m in others))


# --- masks only ever grow; a failed call changes nothing -----------------------------------------

STEP = st.tuples(
    st.sampled_from(["unstructured", "out", "in", "2:4"]),
    st.sampled_from(["local", "global", "row"]),
    st.sampled_from(["absolute", "relative"]),
    st.floats(0, 1),
    st.sampled_from(["magnitude", "l2", "random"]),
)


@SETTINGS
@given(seed=st.integers(0, 2**16), ties=st.booleans(), steps=st.lists(STEP, min_size=1, max_size=5))
def test_pruned_weights_are_never_revived(seed, ties, steps):
    model = convnet(seed, ties)
    seen = pruned(model)
    for pattern, scope, mode, amount, method in steps:
        if pattern == "2:4":
            scope, amount = "local", None
        if scope == "row" and pattern != "unstructured":
            scope = "local"
        sc.prune(model, amount, granularity=pattern, scope=scope, mode=mode, method=method, seed=seed, include_output=True, allow_noop=True)
        now = pruned(model)
        for name, was in seen.items():
            assert bool((now[name] >= was).all()), f"{name} revived after {pattern}/{scope}/{mode}"
            module = model.get_submodule(name.rsplit(".", 1)[0])
            assert bool((module.weight[now[name]] == 0).all())
        seen = now


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters (NaN-safe, bitwise) and masks."""
    out = {k: v.detach().clone().view(torch.int32) for k, v in model.state_dict().items()}
    out.update({f"{name}#mask": mask.clone() for name, _m, _p, mask in masked_parameters(model)})
    return out


BAD_CALLS = {
    "fraction above 1": lambda m: sc.prune(m, 1.5),
    "negative count": lambda m: sc.prune(m, -3),
    "count above a tensor": lambda m: sc.prune(m, 10_000),
    "global count above all": lambda m: sc.prune(m, 10_000, scope="global"),
    "N:M with an amount": lambda m: sc.prune(m, 0.5, granularity="2:4"),
    "unknown pattern": lambda m: sc.prune(m, 0.5, granularity="diagonal"),
    "unknown scope": lambda m: sc.prune(m, 0.5, scope="everywhere"),
    "unknown criterion": lambda m: sc.prune(m, 0.5, method="oracle"),
    "per-layer pattern that matches nothing": lambda m: sc.prune(m, 0.5, per_layer={"nothing.*": 0.2}),
    "include that matches nothing": lambda m: sc.prune(m, 0.5, include="encoder.*"),
    "custom scores of the wrong shape": lambda m: sc.prune(m, 0.95, method=sc.Custom(lambda p: torch.ones(3))),
    "custom scores with NaN": lambda m: sc.prune(m, 0.95, scope="global", method=sc.Custom(lambda p: torch.full_like(p, math.nan))),
}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), bad=st.sampled_from(sorted(BAD_CALLS)), first=st.floats(0, 0.8), nan_layer=st.sampled_from([None, 0, 2]))
def test_a_call_that_raises_leaves_the_model_exactly_as_it_was(seed, bad, first, nan_layer):
    model = mlp(seed, False)
    sc.prune(model, first, include_output=True, allow_noop=True)
    call = BAD_CALLS[bad]
    if nan_layer is not None:  # a NaN in some layer: everything before it must not be written either
        with torch.no_grad():
            model[nan_layer].weight[0, 0] = math.nan
        call = lambda m: sc.prune(m, 0.6, include_output=True)  # noqa: E731
    before = state(model)
    with pytest.raises(sc.SecateursError):
        call(model)
    after = state(model)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key
