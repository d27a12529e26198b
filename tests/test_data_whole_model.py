"""Models without a stack of repeated blocks (the demo CNN) are walked as one block: every data-aware
method works on them with their training data as calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.data import (
    block_influence,
    load_calibration,
    prune_with_data,
    sample_examples,
    unit_criterion,
)
from secateurs.data.sequential import WHOLE_MODEL, block_stack, walk_blocks
from secateurs.demo import build_model, load_dataset
from secateurs.errors import UnsupportedOperationError
from secateurs.structural import shrink

CONVS = ["features.conv1.weight", "features.conv2.weight", "features.conv3.weight"]


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return load_dataset("digits")


def _demo(digits):
    return build_model(digits).eval()


def _calibration(digits, count: int = 48):
    return sample_examples((digits.x_train, digits.y_train), count, batch_size=16)


def test_the_whole_model_is_one_block_fed_every_batch(digits) -> None:
    model = _demo(digits)
    stack = block_stack(model)
    assert stack.whole_model and stack.blocks == (model,) and stack.block_name(0) == WHOLE_MODEL
    assert stack.index_of("features.conv1") == 0
    calls = []
    handle = model.features.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    steps = list(walk_blocks(model, load_calibration(_calibration(digits), model), progress=False))
    for step in steps:
        step.run()
    handle.remove()
    assert len(steps) == 1 and steps[0].name == WHOLE_MODEL
    assert calls == [16, 16, 16]  # one pass over the batches: capturing the inputs runs nothing


@pytest.mark.parametrize(
    "options,pruned",
    [
        ({"method": "wanda", "amount": 0.5}, [*CONVS, "classifier.fc1.weight"]),
        ({"method": "sparsegpt", "amount": 0.5}, ["classifier.fc1.weight"]),  # Linear layers only
        ({"method": "taylor", "amount": 0.5}, [*CONVS, "classifier.fc1.weight"]),
        ({"method": "activation", "amount": 0.25, "granularity": "in"}, [*CONVS, "classifier.fc1.weight"]),
        ({"method": "wanda", "amount": 0.5, "allocation": "owl"}, [*CONVS, "classifier.fc1.weight"]),
    ],
)
def test_every_data_aware_method_prunes_the_demo_cnn(digits, options, pruned) -> None:
    model = _demo(digits)
    report = prune_with_data(model, _calibration(digits), progress=False, **options)
    assert [layer.name for layer in report.layers] == pruned
    assert report.sparsity == pytest.approx(options["amount"], abs=0.01)
    assert report.block_amounts == {WHOLE_MODEL: options["amount"]}
    with torch.no_grad():
        assert torch.isfinite(model(digits.x_test[:4])).all()


@pytest.mark.parametrize("method", ["wanda", "taylor", "activation"])
def test_unit_ranking_for_shrink_on_the_demo_cnn(digits, method: str) -> None:
    model = _demo(digits)
    criterion = unit_criterion(model, _calibration(digits), method, granularity="channel")
    report = shrink(model, (digits.x_test[:2],), 0.25, granularity="channel", method=criterion)
    assert model.features.conv1.out_channels < 16 and report.params_after < report.params_before


def test_block_influence_needs_repeated_blocks(digits) -> None:
    with pytest.raises(UnsupportedOperationError, match="no stack of repeated blocks, so no blocks to rank"):
        block_influence(_demo(digits), _calibration(digits), progress=False)


def test_a_plain_mlp_is_one_block_too() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    report = prune_with_data(model, torch.randn(32, 8), 0.5, method="sparsegpt", progress=False)
    assert [layer.name for layer in report.layers] == ["0.weight", "2.weight"]  # the head is left, as by prune
