"""The block pattern: whole tiles of a 2-D weight are kept or pruned, locally, globally and with data."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.recipes.arguments import granularity_arg
from secateurs.core.patterns import Block, parse_pattern
from secateurs.data import prune_with_data
from secateurs.errors import PruningError, SelectionError


def tiles(weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Nonzero weights per tile of an ``[out, in]`` matrix."""
    out_size, in_size = weight.shape
    return (weight != 0).reshape(out_size // rows, rows, in_size // cols, cols).sum(dim=(1, 3))


def seeded(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*layers)


@pytest.mark.parametrize(
    "spec,rows,cols",
    [("block:16", 16, 16), ("block:16x32", 16, 32), ("Block : 8 x 4", 8, 4), ("block:1", 1, 1)],
)
def test_specs_parse_to_square_and_rectangular_blocks(spec: str, rows: int, cols: int) -> None:
    pattern = parse_pattern(spec)
    assert isinstance(pattern, Block) and (pattern.rows, pattern.cols) == (rows, cols)
    assert granularity_arg(spec) == spec  # the CLI takes it as --granularity


@pytest.mark.parametrize("spec", ["block", "block:0", "block:16x0", "block:-4", "block:4x4x4"])
def test_bad_block_specs_are_refused(spec: str) -> None:
    with pytest.raises(PruningError, match="block"):
        parse_pattern(spec)
    with pytest.raises(argparse.ArgumentTypeError):
        granularity_arg(spec)


@pytest.mark.parametrize("rows,cols", [(16, 16), (8, 32), (32, 8)])
def test_tiles_are_pruned_whole_and_the_amount_counts_tiles(rows: int, cols: int) -> None:
    model = seeded(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    report = sc.prune(model, 0.75, granularity=f"block:{rows}x{cols}", include_output=True)
    for index in (0, 2):
        counts = tiles(model[index].weight, rows, cols)
        assert set(counts.unique().tolist()) <= {0, rows * cols}  # every tile all kept or all pruned
        assert (counts == 0).float().mean().item() == 0.75
    assert [(layer.groups_pruned, layer.groups) for layer in report.layers] == [(24, 32), (24, 32)]
    assert report.sparsity == 0.75


def test_the_tiles_with_the_smallest_scores_go_first() -> None:
    layer = nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 4.0], [3.0, 2.0]]).repeat_interleave(4, 0).repeat_interleave(4, 1))
        layer.weight[0, 0] = 100.0  # one large weight makes its tile the largest by L1
    sc.prune(nn.Sequential(layer), 2, granularity="block:4", include_output=True)  # an int counts tiles
    assert tiles(layer.weight, 4, 4).bool().tolist() == [[True, True], [False, False]]


@pytest.mark.parametrize("method,kept", [("magnitude", [[False, True]]), ("linf", [[True, False]])])
def test_tile_scores_use_the_criterion_reduction(method: str, kept: list[list[bool]]) -> None:
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():  # left tile: one weight of 9 (L1 9, max 9); right tile: four of 3 (L1 12, max 3)
        layer.weight.copy_(torch.tensor([[9.0, 0.0, 3.0, 3.0], [0.0, 0.0, 3.0, 3.0]]))
    sc.prune(nn.Sequential(layer), 1, granularity="block:2", method=method, include_output=True)
    assert tiles(layer.weight, 2, 2).bool().tolist() == kept


def test_hf_conv1d_tiles_follow_its_transposed_layout() -> None:
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(96, 32)  # weight stored [in=32, out=96]
    model = nn.Sequential(conv)
    sc.prune(model, 0.5, granularity="block:16x8", include_output=True)
    counts = tiles(conv.weight.t(), 16, 8)
    assert set(counts.unique().tolist()) == {0, 128}
    assert (counts == 0).float().mean().item() == 0.5


def test_misfit_weights_are_refused_saying_which_dims_and_blocks_fit() -> None:
    layer = nn.Linear(48, 10)
    target = sc.select(nn.Sequential(layer), include_output=True).targets[0]
    with pytest.raises(PruningError, match=r"out 10 is not a multiple of 16.*rows 1, 2, cols 1, 2, 4, 8, 16"):
        Block(16).validate(target)
    Block(2, 16).validate(target)


def test_selection_skips_misfits_and_convolutions_with_the_reason() -> None:
    model = seeded(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.Linear(32, 10))
    report = sc.prune(model, 0.5, granularity="block:16", include_output=True)
    assert [layer.name for layer in report.layers] == ["2.weight"]
    reasons = {item.name: item.reason for item in report.skipped}
    assert "tiles 2-D weights" in reasons["0.weight"] and "channel" in reasons["0.weight"]
    assert "out 10 is not a multiple of 16" in reasons["3.weight"]
    with pytest.raises(SelectionError, match="fits Block"):
        sc.prune(seeded(nn.Linear(10, 10)), 0.5, granularity="block:16", include_output=True)


def test_global_scope_ranks_tiles_of_all_layers_together() -> None:
    model = seeded(nn.Linear(32, 32), nn.Linear(32, 32))
    with torch.no_grad():
        model[1].weight.mul_(100.0)
    report = sc.prune(model, 0.5, granularity="block:8", scope="global", include_output=True)
    assert report.sparsity == 0.5
    assert [layer.sparsity for layer in report.layers] == [1.0, 0.0]  # the small layer's tiles all lose


def test_pruned_tiles_stay_pruned_when_pruning_further() -> None:
    model = seeded(nn.Linear(64, 64))
    sc.prune(model, 0.5, granularity="block:16", include_output=True)
    first = tiles(model[0].weight, 16, 16) == 0
    sc.prune(model, 0.75, granularity="block:16", include_output=True)
    second = tiles(model[0].weight, 16, 16) == 0
    assert bool((second | ~first).all()) and second.float().mean().item() == 0.75


def test_random_scores_rank_tiles_reproducibly() -> None:
    masks = []
    for _ in range(2):
        model = seeded(nn.Linear(64, 64))
        sc.prune(model, 0.5, granularity="block:16", method="random", seed=3, include_output=True)
        masks.append(tiles(model[0].weight, 16, 16) == 0)
    assert torch.equal(*masks) and masks[0].float().mean().item() == 0.5


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("scope,expected_scope", [(None, "row"), ("local", "local")])
def test_wanda_prunes_whole_tiles_of_a_transformer(scope: str | None, expected_scope: str) -> None:
    model = tiny_gpt2()
    ids = torch.randint(0, 96, (8, 16), generator=torch.Generator().manual_seed(1))
    report = prune_with_data(model, ids, 0.5, method="wanda", granularity="block:16", scope=scope, progress=False)
    assert report.scope == expected_scope and report.sparsity == 0.5 and len(report.layers) == 8
    for layer in report.layers:
        weight = model.get_submodule(layer.name.rsplit(".", 1)[0]).weight.t()  # Conv1D: [in, out] read as [out, in]
        counts = tiles(weight, 16, 16)
        assert set(counts.unique().tolist()) == {0, 256} and (counts == 0).float().mean().item() == 0.5
        if expected_scope == "row":  # Wanda's default: every row of tiles keeps half its tiles
            assert (counts == 0).sum(dim=1).tolist() == [counts.shape[1] // 2] * counts.shape[0]


@pytest.mark.parametrize("rows,cols,amount", [(8, 8, 0.75), (8, 16, 0.5), (16, 8, 0.75), (4, 4, 3)])
def test_row_scope_prunes_the_same_number_of_tiles_in_every_row_of_tiles(rows: int, cols: int, amount: float) -> None:
    model = seeded(nn.Linear(64, 32), nn.Linear(32, 48))
    with torch.no_grad():
        model[0].weight[:rows].mul_(100.0)  # one strong output band: a per-layer ranking would spare only it
    report = sc.prune(model, amount, granularity=f"block:{rows}x{cols}", scope="row", include_output=True)
    assert report.scope == "row"
    for index in (0, 1):
        counts = tiles(model[index].weight, rows, cols)
        per_band = (counts == 0).sum(dim=1)
        assert set(counts.unique().tolist()) <= {0, rows * cols}
        width = counts.shape[1]
        expected = amount if isinstance(amount, int) else round(amount * width)
        assert per_band.tolist() == [expected] * counts.shape[0]


def test_row_scope_keeps_the_best_tiles_of_each_band_and_prunes_further_from_there() -> None:
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1, 5, 5], [1, 1, 5, 5], [9, 9, 2, 2], [9, 9, 2, 2]]))
    model = nn.Sequential(layer)
    sc.prune(model, 0.5, granularity="block:2", scope="row", include_output=True)
    assert (tiles(layer.weight, 2, 2) > 0).tolist() == [[False, True], [True, False]]
    sc.prune(model, 1.0, granularity="block:2", scope="row", include_output=True)
    assert not bool(layer.weight.any())


def test_row_scope_refuses_other_structured_patterns_naming_the_ones_it_takes() -> None:
    model = seeded(nn.Linear(16, 16))
    with pytest.raises(PruningError, match="'unstructured' or 'block:R"):
        sc.prune(model, 0.5, granularity="channel", scope="row", include_output=True)
    assert not sc.is_pruned(model)


def test_sparsegpt_refuses_blocks_naming_the_methods_that_take_them() -> None:
    model = tiny_gpt2()
    with pytest.raises(PruningError, match="for blocks wanda or magnitude"):
        prune_with_data(model, torch.zeros(2, 8, dtype=torch.long), 0.5, method="sparsegpt", granularity="block:16")
    assert not sc.is_pruned(model)
