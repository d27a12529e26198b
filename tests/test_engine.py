"""The engine: patterns, scopes, amounts, reports, and refusing bad input without touching the model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.core.amounts import amount_count, check_amount


def convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert not sc.is_pruned(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_local_unstructured_prunes_each_tensor_to_its_amount_by_magnitude():
    model = convnet()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight_mask") or isinstance(m, (nn.Conv2d, nn.Linear))}
    report = sc.prune(model, 0.3)
    assert [layer.name for layer in report.layers] == ["0.weight", "3.weight", "6.weight"]
    for layer in report.layers:
        name = layer.name.rsplit(".", 1)[0]
        param = model.get_submodule(name).weight
        assert zeros(param) == round(0.3 * param.numel())
        # magnitude: every pruned weight is no larger than every kept one
        original = weights[name].abs()
        assert original[param == 0].max() <= original[param != 0].min()


def test_global_unstructured_uses_one_threshold_across_tensors():
    model = convnet()
    originals = [model[i].weight.detach().abs().clone() for i in (0, 3, 6)]
    sc.prune(model, 0.5, scope="global")
    pruned = [model[i].weight == 0 for i in (0, 3, 6)]
    total = sum(o.numel() for o in originals)
    assert sum(int(p.sum()) for p in pruned) == round(0.5 * total)
    largest_pruned = max(o[p].max() for o, p in zip(originals, pruned) if p.any())
    smallest_kept = min(o[~p].min() for o, p in zip(originals, pruned) if (~p).any())
    assert largest_pruned <= smallest_kept
    per_layer = [p.float().mean().item() for p in pruned]
    assert max(per_layer) - min(per_layer) > 0.01  # global allocation is not uniform


def test_absolute_amounts_are_targets_and_relative_amounts_are_fractions_of_what_remains():
    model = convnet()
    sc.prune(model, 0.3)
    sc.prune(model, 0.5)
    assert zeros(model[6].weight) == round(0.5 * model[6].weight.numel())
    with pytest.raises(sc.NothingPrunedError, match="already at"):
        sc.prune(model, 0.4)  # already sparser: nothing more, and saying so
    sc.prune(model, 0.4, allow_noop=True)
    assert zeros(model[6].weight) == round(0.5 * model[6].weight.numel())
    other = convnet()
    sc.prune(other, 0.5, mode="relative")
    sc.prune(other, 0.5, mode="relative")
    n = other[6].weight.numel()
    assert zeros(other[6].weight) == round(0.5 * n) + round(0.5 * (n - round(0.5 * n)))


def test_int_amount_is_a_count():
    model = convnet()
    sc.prune(model, 7, include="0.weight")
    assert zeros(model[0].weight) == 7


def test_repruning_never_revives_weights():
    model = convnet()
    sc.prune(model, 0.4, method="random", seed=3)
    first = model[6].weight == 0
    sc.prune(model, 0.6, method="random", seed=4)
    second = model[6].weight == 0
    assert torch.all(second[first])


def test_channel_pattern_zeroes_whole_output_rows_by_l2_norm():
    model = convnet()
    norms = model[3].weight.detach().flatten(1).norm(dim=1)
    sc.prune(model, 0.25, granularity="channel", method="l2", include="3.weight")
    dead = (model[3].weight.flatten(1) == 0).all(dim=1)
    assert int(dead.sum()) == 4
    assert set(torch.topk(norms, 4, largest=False).indices.tolist()) == set(dead.nonzero().flatten().tolist())
    alive = model[3].weight.flatten(1)[~dead]
    assert torch.all(alive != 0)


def test_input_pattern_zeroes_whole_columns():
    model = convnet()
    sc.prune(model, 0.5, granularity="in", include="6.weight")
    dead = (model[6].weight == 0).all(dim=0)
    assert int(dead.sum()) == 128


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_nm_pattern_keeps_n_of_every_m_along_the_input_dim(n, m):
    model = convnet()
    sc.prune(model, granularity=f"{n}:{m}", include=["3.weight", "6.weight"])
    linear = model[6].weight.reshape(32, -1, m)
    assert torch.all((linear != 0).sum(-1) == n)
    conv = model[3].weight.movedim(1, -1).reshape(16, 3, 3, -1, m)
    assert torch.all((conv != 0).sum(-1) == n)


def test_nm_keeps_the_largest_weights_of_each_block():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.5]]))
    model = nn.Sequential(layer, nn.Linear(1, 1))
    sc.prune(model, granularity="2:4")
    assert torch.equal(layer.weight, torch.tensor([[0.0, -3.0, 2.0, 0.0]]))


def test_nm_skips_layers_whose_input_dim_is_not_a_multiple_of_m():
    model = convnet()  # first conv has 3 input channels
    report = sc.prune(model, granularity="2:4")
    assert "0.weight" in {s.name for s in report.skipped}
    assert [layer.name for layer in report.layers] == ["3.weight", "6.weight"]


def test_nm_rejects_amounts_and_global_scope():
    model = convnet()
    before = snapshot(model)
    with pytest.raises(sc.PruningError, match="fixes the sparsity"):
        sc.prune(model, 0.5, granularity="2:4", include="6.weight")
    with pytest.raises(sc.PruningError, match="local"):
        sc.prune(model, granularity="2:4", scope="global", include="6.weight")
    assert_untouched(model, before)


def test_row_scope_gives_every_row_the_same_sparsity():
    model = convnet()
    sc.prune(model, 0.5, scope="row", include="6.weight")
    per_row = (model[6].weight == 0).sum(dim=1)
    assert torch.all(per_row == 128)


def test_per_layer_amounts_override_the_default():
    model = convnet()
    sc.prune(model, 0.2, per_layer={"3.*": 0.9})
    assert zeros(model[3].weight) == round(0.9 * model[3].weight.numel())
    assert zeros(model[6].weight) == round(0.2 * model[6].weight.numel())
    with pytest.raises(sc.SelectionError, match="match no selected"):
        sc.prune(convnet(), 0.2, per_layer={"nothing.*": 0.5})


def test_global_with_per_layer_override_ranks_the_rest_together():
    model = convnet()
    sc.prune(model, 0.5, scope="global", per_layer={"0.weight": 0.1})
    assert zeros(model[0].weight) == round(0.1 * model[0].weight.numel())
    rest = model[3].weight.numel() + model[6].weight.numel()
    assert zeros(model[3].weight) + zeros(model[6].weight) == round(0.5 * rest)


def test_global_structured_ranks_channels_across_layers():
    model = convnet()
    sc.prune(model, 0.5, granularity="channel", scope="global", include=["0.weight", "3.weight"])
    dead = [(model[i].weight.flatten(1) == 0).all(dim=1).sum().item() for i in (0, 3)]
    assert sum(dead) == 12


def test_random_is_reproducible_by_seed_and_by_global_rng():
    masks_by_seed = []
    for _ in range(2):
        model = convnet()
        sc.prune(model, 0.5, method="random", seed=11)
        masks_by_seed.append(model[6].weight_mask.clone())
    assert torch.equal(*masks_by_seed)
    masks_by_rng = []
    for _ in range(2):
        model = convnet()
        torch.manual_seed(5)
        sc.prune(model, 0.5, method="random")
        masks_by_rng.append(model[6].weight_mask.clone())
    assert torch.equal(*masks_by_rng)
    other = convnet()
    sc.prune(other, 0.5, method="random", seed=12)
    assert not torch.equal(other[6].weight_mask, masks_by_seed[0])


def test_custom_scores_decide_what_goes():
    model = convnet()
    scores = torch.arange(model[6].weight.numel(), dtype=torch.float32).reshape(model[6].weight.shape)
    sc.prune(model, 0.25, method=sc.Custom({"6.weight": scores}), include="6.weight")
    assert torch.all(model[6].weight.flatten()[: scores.numel() // 4] == 0)
    assert torch.all(model[6].weight.flatten()[scores.numel() // 4 :] != 0)
    fn_model = convnet()
    sc.prune(fn_model, 0.25, method=sc.Custom(lambda w: -w.abs()), include="6.weight")
    kept = fn_model[6].weight != 0
    original = convnet()[6].weight.abs()
    assert original[kept].max() <= original[~kept].min()  # largest ones were pruned


def test_custom_scores_of_the_wrong_shape_are_refused():
    model = convnet()
    before = snapshot(model)
    with pytest.raises(sc.PruningError, match="one score per weight"):
        sc.prune(model, 0.5, method=sc.Custom(torch.ones(3)), include="6.weight")
    assert_untouched(model, before)


def test_report_counts_and_serialises():
    model = convnet()
    report = sc.prune(model, 0.5, granularity="channel", include="6.weight")
    (layer,) = report.layers
    assert (layer.groups, layer.groups_pruned) == (32, 16)
    assert layer.zeros_after == 16 * 256 and layer.zeros_before == 0
    data = report.to_dict()
    assert data["layers"][0]["sparsity"] == pytest.approx(0.5)
    assert "6.weight" in str(report)
    assert '"scope": "local"' in report.to_json()


@pytest.mark.parametrize(
    "amount, match",
    [(1.5, r"not a fraction"), (-0.1, r"not a fraction"), (-2, "negative"), (True, "float fraction"), ("0.5", "float fraction"), (math.nan, "not a fraction"), (10_000, "cannot prune")],
)
def test_bad_amounts_are_refused_and_the_model_is_untouched(amount, match):
    model = convnet()
    before = snapshot(model)
    with pytest.raises(sc.PruningError, match=match):
        sc.prune(model, amount)
    assert_untouched(model, before)


def test_one_amount_rule_with_an_exclusive_bound_for_physical_pruning():
    assert check_amount(1.0) == 1.0 and check_amount(0.25) == 0.25 and check_amount(3) == 3
    assert check_amount(0.99, whole=False) == 0.99 and check_amount(7, whole=False) == 7
    with pytest.raises(sc.PruningError, match=r"not a fraction in \[0, 1\); a group is never removed whole"):
        check_amount(1.0, whole=False)
    assert amount_count(0.5, 5) == 2 and amount_count(0.5, 7) == 4 and amount_count(3, 7) == 3  # half to even


def test_a_bad_amount_on_one_layer_leaves_every_layer_untouched():
    model = convnet()
    before = snapshot(model)
    with pytest.raises(sc.PruningError, match="cannot prune"):
        sc.prune(model, 300)  # fits the large layers, not the first conv (216 weights)
    assert_untouched(model, before)


def test_non_finite_weights_are_refused():
    model = convnet()
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] = float("nan")
        model[6].weight[0, 0] = float("inf")
    before = snapshot(model)
    with pytest.raises(sc.PruningError, match="NaN/Inf"):
        sc.prune(model, 0.5)
    assert not sc.is_pruned(model)
    assert torch.equal(model[0].weight, before["0.weight"])


def test_non_floating_and_meta_parameters_are_refused():
    model = convnet()
    model[6].weight = nn.Parameter(torch.ones(10, 32, dtype=torch.int64), requires_grad=False)
    with pytest.raises(sc.PruningError, match="floating-point"):
        sc.prune(model, 0.5, include="6.weight", include_frozen=True)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match="meta device"):
        sc.prune(meta, 0.5)


def test_unknown_method_and_pattern_and_scope_are_refused():
    model = convnet()
    with pytest.raises(sc.PruningError, match="unknown criterion"):
        sc.prune(model, 0.5, method="telepathy")
    with pytest.raises(sc.PruningError, match="unknown pattern"):
        sc.prune(model, 0.5, granularity="diagonal")
    with pytest.raises(sc.PruningError, match="scope"):
        sc.prune(model, 0.5, scope="universe")
    with pytest.raises(sc.PruningError, match="give an amount"):
        sc.prune(model)
    assert not sc.is_pruned(model)


def test_structured_on_one_dimensional_tensor_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(sc.PruningError, match="at least 2 dims"):
        sc.prune_targets([sc.Target("0", "bias", model[0])], 0.5, granularity="channel")


def test_ln_norm_orders_and_linf():
    model = convnet()
    weight = model[6].weight.detach().clone()
    sc.prune(model, 0.25, granularity="channel", method=sc.LnNorm("inf"), include="6.weight")
    dead = (model[6].weight == 0).all(dim=1)
    expected = torch.topk(weight.abs().amax(dim=1), 8, largest=False).indices
    assert set(dead.nonzero().flatten().tolist()) == set(expected.tolist())
    with pytest.raises(sc.PruningError, match="positive or inf"):
        sc.LnNorm(-1)


def test_summary_reports_layers_zero_rows_and_totals():
    model = convnet()
    sc.prune(model, 0.5, granularity="channel", include="3.weight")
    table = sc.summary(model)
    row = table.row("3.weight")
    assert row.zero_rows == pytest.approx(0.5) and row.zero_cols == 0.0 and row.masked
    assert row.sparsity == pytest.approx(0.5)
    assert table.params == sum(p.numel() for p in model.parameters())
    assert table.nonzeros == sum(int(torch.count_nonzero(p)) for p in model.parameters())
    assert "3.weight" in str(table)
    data = table.to_dict()
    assert data["total"]["params"] == table.params
    assert '"layers"' in table.to_json()


def test_bf16_and_half_parameters_can_be_pruned():
    model = convnet().to(torch.bfloat16)
    sc.prune(model, 0.5, scope="global")
    total = sum(model[i].weight.numel() for i in (0, 3, 6))
    assert sum(zeros(model[i].weight) for i in (0, 3, 6)) == round(0.5 * total)
