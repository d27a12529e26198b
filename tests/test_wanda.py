"""Data-aware criteria against hand-computed references: Wanda, activation, Taylor; and their statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.core.targets import Target
from secateurs.data import (
    Activation,
    Batch,
    Calibration,
    InputStatistics,
    Taylor,
    Wanda,
    accumulate_gradients,
    collect_input_statistics,
)
from secateurs.errors import PruningError


def linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


def gather(module: nn.Module, *inputs: torch.Tensor, gram: bool = False) -> InputStatistics:
    stats = InputStatistics(gram=gram)
    with stats.watch([module]), torch.no_grad():
        for x in inputs:
            module(x)
    return stats


def test_wanda_scores_by_hand() -> None:
    layer = linear([[1.0, -2.0, 0.5], [3.0, 0.5, -1.0]])
    x = torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 0.0]])  # column norms: 5, 1, 1
    stats = gather(layer, x[:1], x[1:])  # two batches add up
    scores = Wanda(stats).score(layer.weight, Target("l", "weight", layer))
    expected = torch.tensor([[5.0, 2.0, 0.5], [15.0, 0.5, 1.0]])
    torch.testing.assert_close(scores, expected)


def test_wanda_row_scope_keeps_each_rows_best_by_hand() -> None:
    model = nn.Sequential(linear([[1.0, -2.0, 0.5, 4.0], [3.0, 0.5, -1.0, 0.1]]), nn.Linear(2, 1))
    x = torch.tensor([[3.0, 0.0, 1.0, 0.5], [4.0, 1.0, 0.0, 0.0]])  # norms 5, 1, 1, 0.5
    stats = gather(model[0], x)
    sc.prune(model, 0.5, method="wanda", stats=stats, scope="row", include="0")
    # scores row 0: 5, 2, 0.5, 2 -> keep w0 and (tie 2, 2: the earlier is pruned first) w3
    # scores row 1: 15, 0.5, 1, 0.05 -> keep w0, w2
    expected = torch.tensor([[True, False, False, True], [True, False, True, False]])
    assert torch.equal(sc.get_mask(model[0], "weight"), expected)


def test_wanda_follows_hf_conv1d_layout() -> None:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(2, 3)  # weight [in=3, out=2]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 3.0], [-2.0, 0.5], [0.5, -1.0]]))
    stats = gather(layer, torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 0.0]]))
    scores = Wanda(stats).score(layer.weight, Target("c", "weight", layer))
    torch.testing.assert_close(scores, torch.tensor([[5.0, 15.0], [2.0, 0.5], [0.5, 1.0]]))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_wanda_n_m_masks_are_valid(n: int, m: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    stats = InputStatistics()
    with stats.watch([model[0]]), torch.no_grad():
        model(torch.randn(32, 16))
    scores = Wanda(stats).score(model[0].weight, Target("0", "weight", model[0])).view(8, -1, m)
    sc.prune(model, method="wanda", stats=stats, granularity=f"{n}:{m}", include="0")
    mask = sc.get_mask(model[0], "weight").view(8, -1, m)
    assert torch.all(mask.sum(-1) == n)
    # every kept weight outscores every pruned weight of its block
    assert torch.all(scores.masked_fill(~mask, float("inf")).amin(-1) >= scores.masked_fill(mask, 0).amax(-1))


def test_statistics_skip_padding_and_share_identical_inputs() -> None:
    torch.manual_seed(1)
    q, k = nn.Linear(4, 4), nn.Linear(4, 4)
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    stats = InputStatistics(gram=True)
    with stats.watch([q, k]), stats.tokens(mask), torch.no_grad():
        q(x)
        k(x)  # same tensor: reuses q's products
    real = x[mask]
    for layer in (q, k):
        assert stats.count(layer) == 3
        torch.testing.assert_close(stats.input_norm(layer), real.norm(dim=0))
        torch.testing.assert_close(stats.hessian(layer), real.T @ real / 3)


def test_activation_ranks_input_columns_by_rms() -> None:
    model = nn.Sequential(linear([[1.0, 1.0, 1.0, 1.0]] * 3), nn.Linear(3, 1))
    x = torch.tensor([[0.1, 2.0, 1.0, 0.2], [0.1, 2.0, -1.0, 0.2]])
    stats = gather(model[0], x)
    target = Target("0", "weight", model[0])
    scores = Activation(stats).score(model[0].weight, target)
    torch.testing.assert_close(scores[0], torch.tensor([0.1, 2.0, 1.0, 0.2]))
    sc.prune(model, 2, method="activation", stats=stats, granularity="in", include="0")
    assert torch.equal(sc.get_mask(model[0], "weight")[0], torch.tensor([False, True, True, False]))


def test_taylor_is_weight_times_gradient_summed_over_batches() -> None:
    layer = linear([[2.0, -1.0]])
    batches = [
        Batch(args=(torch.tensor([[1.0, 0.0]]),), target=torch.tensor([[1.0]])),
        Batch(args=(torch.tensor([[0.0, 3.0]]),), target=torch.tensor([[0.0]])),
    ]

    def mse(model: nn.Module, batch: Batch) -> torch.Tensor:
        return ((batch.run(model) - batch.target) ** 2).sum()

    grads = accumulate_gradients(layer, Calibration(batches), [layer.weight], mse)
    # batch 1: y = 2, dL/dW = 2 (y - 1) x = [2, 0];  batch 2: y = -3, dL/dW = 2 * -3 * [0, 3] = [0, -18]
    expected = (torch.tensor([[2.0, -1.0]]) * torch.tensor([[2.0, 0.0]])).abs() + (
        torch.tensor([[2.0, -1.0]]) * torch.tensor([[0.0, -18.0]])
    ).abs()
    scores = Taylor(grads).score(layer.weight, Target("l", "weight", layer))
    torch.testing.assert_close(scores, expected)
    assert layer.weight.grad is None and layer.weight.requires_grad


def test_criteria_without_statistics_say_how_to_get_them() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    for name in ("wanda", "activation", "taylor"):
        with pytest.raises(PruningError, match="prune_with_data"):
            sc.prune(model, 0.5, method=name, include="0")
        assert not sc.is_pruned(model)
    empty = InputStatistics()
    with pytest.raises(PruningError, match="saw no input"):
        sc.prune(model, 0.5, method="wanda", stats=empty, include="0")


def test_missing_zero_scores_what_statistics_cannot() -> None:
    torch.manual_seed(2)
    seen, unseen = nn.Linear(3, 2), nn.Linear(3, 2)
    stats = gather(seen, torch.randn(4, 3))
    for criterion in (Wanda(stats, missing="zero"), Activation(stats, missing="zero")):
        assert torch.all(criterion.score(seen.bias, Target("s", "bias", seen)) == 0)
        assert torch.all(criterion.score(unseen.weight, Target("u", "weight", unseen)) == 0)
        assert torch.all(criterion.score(seen.weight, Target("s", "weight", seen)) > 0)
    with pytest.raises(PruningError, match="missing"):
        Wanda(stats, missing="ignore")


def test_activation_scores_drive_structural_head_and_neuron_removal() -> None:
    transformers = pytest.importorskip("transformers")
    structural = pytest.importorskip("secateurs.structural")

    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=16, max_position_embeddings=32)
    torch.manual_seed(3)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 64, (4, 8))
    stats = collect_input_statistics(model, ids)
    output = model.encoder.layer[0].output.dense
    rms = stats.input_rms(output)
    quiet = set(rms.argsort()[:4].tolist())  # the 4 least active MLP neurons
    kept_before = output.weight[:, [i for i in range(16) if i not in quiet]].clone()
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    criterion = Activation(stats, missing="zero")
    structural.shrink(model, example, 0.25, granularity="channel", method=criterion, exclude=["*.attention.*"])
    assert output.weight.shape == (32, 12)
    torch.testing.assert_close(output.weight, kept_before)  # exactly the quiet neurons went
    structural.shrink(model, example, 0.25, granularity="head", method=criterion)
    assert model.encoder.layer[0].attention.self.query.weight.shape[0] == 24  # 3 of 4 heads left
