"""SparseGPT: the OBS column update by hand, reconstruction, N:M, earlier masks, layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.core.targets import Target
from secateurs.data.sparsegpt import prune_layer, sparsegpt
from secateurs.data.statistics import InputStatistics
from secateurs.errors import PruningError


def gram(x: torch.Tensor) -> torch.Tensor:
    return x.T @ x / x.shape[0]


def test_one_column_update_is_the_obs_formula() -> None:
    # Prune w_0 of a single row, keep the rest: OBS moves the others by -(w_0 / [H^-1]_00) H^-1[0, :].
    x = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0], [2.0, 1.0, 1.0]], dtype=torch.float64)
    hessian = gram(x)
    w = torch.tensor([[0.8, -0.5, 0.3]], dtype=torch.float64)
    keep = torch.tensor([[False, True, True]])
    new, mask = sparsegpt(w, hessian, sparsity=1 / 3, damping=0.0, keep=keep)

    inverse = torch.linalg.inv(hessian)
    expected = w[0] - (w[0, 0] / inverse[0, 0]) * inverse[0]
    assert torch.equal(mask, keep)
    assert new[0, 0] == 0.0
    torch.testing.assert_close(new[0], expected)
    # ...which is the least-squares refit of the remaining weights to the dense output.
    refit = torch.linalg.lstsq(x[:, 1:], x @ w[0]).solution
    torch.testing.assert_close(new[0, 1:], refit)


def test_reconstruction_beats_the_same_mask_without_update() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 48) @ torch.randn(48, 48) + torch.randn(48)
    w = torch.randn(16, 48)
    new, mask = sparsegpt(w, gram(x), sparsity=0.5, block_size=16)
    assert int((~mask).sum()) == w.numel() // 2
    assert torch.all(new[~mask] == 0)
    error = lambda v: float(((x @ (w - v).T) ** 2).mean())  # noqa: E731
    assert error(new) < 0.8 * error(w * mask)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_n_m_masks_are_valid(n: int, m: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(256, 32)
    new, mask = sparsegpt(torch.randn(8, 32), gram(x), n_m=(n, m), block_size=16)
    assert torch.all(mask.view(8, -1, m).sum(-1) == n)
    assert torch.all(new[~mask] == 0)


def test_earlier_pruning_stays_pruned_and_counts() -> None:
    torch.manual_seed(2)
    x = torch.randn(128, 16)
    prior = torch.rand(4, 16) > 0.2
    for kwargs in ({"sparsity": 0.5}, {"n_m": (2, 4)}):
        _, mask = sparsegpt(torch.randn(4, 16), gram(x), keep=prior, **kwargs)
        assert not torch.any(mask & ~prior)


def test_dead_inputs_and_singular_hessians_are_handled() -> None:
    torch.manual_seed(3)
    x = torch.randn(4, 12)  # fewer samples than inputs: singular without damping
    x[:, 5] = 0.0  # an input that never fires
    new, mask = sparsegpt(torch.randn(3, 12), gram(x), sparsity=0.5, block_size=8)
    assert torch.isfinite(new).all()
    assert torch.all(new[:, 5] == 0)


def test_bad_requests_raise() -> None:
    w, h = torch.randn(2, 8), torch.eye(8)
    with pytest.raises(PruningError, match="exactly one"):
        sparsegpt(w, h)
    with pytest.raises(PruningError, match="divisible"):
        sparsegpt(torch.randn(2, 6), torch.eye(6), n_m=(2, 4))
    with pytest.raises(PruningError, match="Hessian"):
        sparsegpt(w, torch.eye(4), sparsity=0.5)


def test_prune_layer_writes_weights_and_mask_for_linear_and_hf_conv1d() -> None:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(4)
    x = torch.randn(64, 8)
    for module in (nn.Linear(8, 6), Conv1D(6, 8)):  # Conv1D(nf=out, nx=in) stores [in, out]
        target = Target("layer", "weight", module)
        keep = prune_layer(target, gram(x), sparsity=0.5)
        assert keep.shape == module.weight.shape
        assert sc.get_mask(module, "weight") is not None
        assert torch.all(module.weight[~keep] == 0)
        assert int((~keep).sum()) == 24


def test_the_hessian_is_left_alone_unless_it_may_be_overwritten() -> None:
    torch.manual_seed(5)
    x = torch.randn(256, 24)
    x[:, 3] = 0.0  # a dead input: its diagonal entry is changed in the solver's copy only
    w, hessian = torch.randn(5, 24), gram(x)
    untouched = hessian.clone()
    new, mask = sparsegpt(w, hessian, sparsity=0.5, block_size=8)
    assert torch.equal(hessian, untouched)
    new_in_place, mask_in_place = sparsegpt(w, hessian, sparsity=0.5, block_size=8, overwrite_hessian=True)
    assert torch.equal(new, new_in_place) and torch.equal(mask, mask_in_place)


def test_statistics_read_once_hand_the_hessian_over_and_forget_the_layer() -> None:
    layer, x = nn.Linear(6, 3), torch.randn(40, 6)
    kept, handed = InputStatistics(gram=True), InputStatistics(gram=True, read_once=True)
    for stats in (kept, handed):
        with stats.watch([layer]), torch.no_grad():
            layer(x)
    torch.testing.assert_close(kept.hessian(layer), gram(x))
    assert torch.equal(handed.hessian(layer), kept.hessian(layer))
    assert layer in kept and layer not in handed
