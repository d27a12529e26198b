"""Selection: defaults that protect norms, embeddings and the output layer; patterns that must match."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc


class TinyTransformerish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.block = nn.ModuleDict({"attn": nn.Linear(8, 8), "mlp": nn.Linear(8, 16), "proj": nn.Linear(16, 8)})
        self.head = nn.Linear(8, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(ids))
        x = x + self.block["attn"](x)
        x = x + self.block["proj"](torch.relu(self.block["mlp"](x)))
        return self.head(x)


def reasons(selection: sc.Selection) -> dict[str, str]:
    return {s.name: s.reason for s in selection.skipped}


def test_defaults_select_linear_layers_and_skip_norm_embedding_output():
    model = TinyTransformerish()
    selection = sc.select(model)
    assert selection.names == ["block.attn.weight", "block.mlp.weight", "block.proj.weight"]
    why = reasons(selection)
    assert why["embed.weight"] == "embedding"
    assert why["norm.weight"] == "normalization layer"
    assert why["head.weight"].startswith("output layer")


def test_include_output_and_exact_names_override_defaults():
    model = TinyTransformerish()
    assert "head.weight" in sc.select(model, include_output=True).names
    assert sc.select(model, include="embed.weight").names == ["embed.weight"]
    assert sc.select(model, include="head").names == ["head.weight"]


def test_globs_respect_type_defaults_and_regexes_work():
    model = TinyTransformerish()
    assert sc.select(model, include="block.*").names == ["block.attn.weight", "block.mlp.weight", "block.proj.weight"]
    assert sc.select(model, include="re:block\\.(mlp|proj)").names == ["block.mlp.weight", "block.proj.weight"]
    assert sc.select(model, exclude="*.attn*").names == ["block.mlp.weight", "block.proj.weight"]
    selection = sc.select(model, types=[nn.Embedding, "LayerNorm"])
    assert selection.names == ["embed.weight", "norm.weight"]


def test_param_names_select_biases_too():
    model = TinyTransformerish()
    names = sc.select(model, include="block.mlp", param_names=("weight", "bias")).names
    assert names == ["block.mlp.weight", "block.mlp.bias"]


def test_patterns_that_match_nothing_are_errors_with_suggestions():
    model = TinyTransformerish()
    with pytest.raises(sc.SelectionError, match="block.mlp.weight"):
        sc.select(model, include="block.mpl.weight")
    with pytest.raises(sc.SelectionError, match="exclude pattern"):
        sc.select(model, exclude="decoder.*")
    with pytest.raises(sc.SelectionError, match="bad regular expression"):
        sc.select(model, include="re:(")


def test_empty_selection_explains_what_was_skipped():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(sc.SelectionError, match="output layer"):
        sc.select(model)


def test_frozen_parameters_are_skipped_and_explicit_ones_refused():
    model = TinyTransformerish()
    model.block["attn"].weight.requires_grad_(False)
    selection = sc.select(model)
    assert "block.attn.weight" not in selection.names
    assert "frozen" in reasons(selection)["block.attn.weight"]
    assert "block.attn.weight" in sc.select(model, include_frozen=True).names
    with pytest.raises(sc.SelectionError, match="include_frozen=True"):
        sc.select(model, include="block.attn.weight")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(sc.SelectionError, match="include_frozen"):
        sc.prune(model, 0.5)
    assert not sc.is_pruned(model)


def test_tied_parameters_become_one_target_with_aliases():
    model = TinyTransformerish()
    model.head.weight = model.embed.weight
    selection = sc.select(model, include="embed.weight")
    (target,) = selection.targets
    assert [name for name, _ in target.holders] == ["embed", "head"]
