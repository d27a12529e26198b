"""2:4 semi-structured kernels: refused with the reason where they cannot run (every CPU), and on a CUDA GPU
the converted model computes what the dense half-precision model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sc
from secateurs.export import UnsupportedFormatError, deployable_copy, semi_structured_support, to_semi_structured
from secateurs.export.semi_structured import is_two_four

needs_cuda = pytest.mark.skipif(
    semi_structured_support("cuda") != "", reason=f"no 2:4 kernels here: {semi_structured_support('cuda')}"
)


def two_four_mlp(width: int = 128) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 8))
    sc.prune(model.eval(), granularity="2:4")
    return model


def test_two_four_weights_are_recognised():
    model = two_four_mlp(64)
    assert is_two_four(model[0].weight) and is_two_four(model[2].weight)
    assert not is_two_four(torch.ones(8, 8)) and not is_two_four(model[4].weight)  # the output layer is not pruned


def test_cpu_is_refused_with_the_reason_before_any_work():
    model = two_four_mlp(64)
    assert "CUDA" in semi_structured_support("cpu")
    assert "float16 or bfloat16" in semi_structured_support("cuda", torch.float32)
    with pytest.raises(UnsupportedFormatError, match="cannot use 2:4 kernels: 2:4 kernels run only on CUDA"):
        to_semi_structured(model, device="cpu")
    assert sc.is_pruned(model) and model[0].weight.device.type == "cpu"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semi_structured_layers_match_dense_half_precision(dtype):
    model = two_four_mlp()
    result = to_semi_structured(model, dtype=dtype)
    assert result.converted == ["0", "2"] and result.skipped == {"4": "not 2:4 sparse"}
    dense = deployable_copy(model).to("cuda", dtype)
    x = torch.randn(64, 128, device="cuda", dtype=dtype)
    with torch.no_grad():
        expected, found = dense(x), result.model(x)
    assert torch.allclose(found, expected, rtol=2e-2, atol=2e-2)
    assert sc.is_pruned(model) and model[0].weight.device.type == "cpu"  # the given model is untouched


@pytest.mark.gpu
@needs_cuda
def test_a_model_without_two_four_layers_is_refused():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedFormatError, match="no Linear layer could take 2:4 kernels"):
        to_semi_structured(nn.Sequential(nn.Linear(128, 128)))
