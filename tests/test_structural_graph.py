"""Structural pruning on tiny hand-built models: the dependency analysis, the surgery and the options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateurs
from secateurs.errors import PruningError, SelectionError, UnsupportedOperationError
from secateurs.structural import build_graph, shrink
from secateurs.structural.axes import CAT, PROD, AxisStore
from secateurs.structural.persist import apply_structure, structure_of

pytestmark = pytest.mark.xdist_group("structural")


def conv_bn(cin: int, cout: int, **kw) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


def randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong slice of them shows in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = nn.Sequential(conv_bn(16, 16), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.body(x))
        return self.fc(x.mean((2, 3)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = conv_bn(3, 8), conv_bn(3, 12)
        self.merge = conv_bn(20, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.merge(torch.cat([self.a(x), self.b(x)], 1)).amax((2, 3)))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 style: chunk in two, process one half, concatenate, shuffle channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.branch = nn.Sequential(conv_bn(8, 8), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), conv_bn(8, 8))
        self.after = conv_bn(16, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.branch(right)], 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(self.after(x).mean((2, 3)))


class DepthwiseSE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = conv_bn(3, 24)
        self.dw = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24), nn.ReLU())
        self.se_reduce, self.se_expand = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 1)
        self.project = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16 * 4 * 4, 6)

    def forward(self, x):
        x = self.dw(self.expand(x))
        scale = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = self.project(x * scale)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 4), 1))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 32)
        self.g = conv_bn(32, 32, groups=4)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc(self.g(self.a(x)).mean((2, 3)))


class GQAttention(nn.Module):
    """Grouped-query attention: 8 query heads share 2 key/value heads; explicit scale; gated MLP."""

    def __init__(self, dim: int = 32, heads: int = 8, kv_heads: int = 2, head_dim: int = 8) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv_heads * head_dim)
        self.v = nn.Linear(dim, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)
        self.gate, self.up, self.down = nn.Linear(dim, 64), nn.Linear(dim, 64), nn.Linear(64, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        groups = q.shape[1] // k.shape[1]
        k = k[:, :, None].expand(b, k.shape[1], groups, n, self.head_dim).reshape(b, -1, n, self.head_dim)
        v = v[:, :, None].expand(b, v.shape[1], groups, n, self.head_dim).reshape(b, -1, n, self.head_dim)
        out = F.scaled_dot_product_attention(q, k, v, scale=0.125)
        x = x + self.o(out.transpose(1, 2).reshape(b, n, -1))
        return x + self.down(F.silu(self.gate(x)) * self.up(x))


def check_shrink(model: nn.Module, x: torch.Tensor, **kwargs):
    before = copy.deepcopy(model)
    report = shrink(model, x, **kwargs)
    assert report.verified and report.max_rel_diff <= report.tolerance, report
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    with torch.no_grad():
        assert model(x).shape == before(x).shape  # the output keeps its size
    return report


# -- axis algebra ---------------------------------------------------------------------------------
def test_axes_products_concatenations_and_incompatible_structures():
    store = AxisStore()
    q = store.new(12)
    store.unify(q, store.make(PROD, [store.new(2), store.new(6)]))  # GQA: heads = kv_heads x group
    assert [p.size for p in store.layout(q).parts] == [2, 6]
    x1, y = store.new(4), store.new(4)
    _, row = store.refine(store.make(CAT, [x1, y]), PROD, [2, 4])  # channel shuffle of a concatenation
    assert store.find(x1) == store.find(y) == store.find(row)
    a = store.new(96)
    store.refine(a, PROD, [8, 12])
    store.unify(a, store.make(PROD, [store.new(12), store.new(8)]))  # no common refinement: pinned
    assert all(store.is_frozen(c) for c in store.atoms(a))
    layout = store.layout(q)
    kv = layout.parts[0].cls
    assert layout.kept_positions({kv: np.array([1])}).tolist() == list(range(6, 12))


# -- the graph on tiny models -----------------------------------------------------------------------
def test_residual_add_couples_the_stream_and_keeps_the_output():
    model = randomise_norms(Residual())
    x = torch.randn(2, 3, 16, 16)
    graph = build_graph(model, x)
    stream = [g for g in graph.groups() if any(m.tensor == "stem.0.weight" for m in g.members)]
    assert len(stream) == 1
    members = {f"{m.tensor}[{m.dim}]" for m in stream[0].members}
    assert {"stem.0.weight[0]", "body.1.weight[0]", "body.2.running_mean[0]", "fc.weight[1]", "body.0.0.weight[1]"} <= members
    assert graph.why_frozen("fc.weight")[0] == ["model output"]
    check_shrink(model, x, amount=0.5)
    assert model.stem[0].out_channels == model.body[1].out_channels == model.fc.in_features == 8
    assert model.fc.out_features == 5


def test_concatenation_prunes_each_input_and_the_consumer_columns():
    model = randomise_norms(Concat())
    x = torch.randn(1, 3, 12, 12)
    check_shrink(model, x, amount=0.5)
    assert (model.a[0].out_channels, model.b[0].out_channels, model.merge[0].in_channels) == (4, 6, 10)


def test_chunk_and_channel_shuffle_keep_halves_equal():
    model = randomise_norms(ShuffleUnit())
    x = torch.randn(1, 3, 12, 12)
    check_shrink(model, x, amount=0.5)
    assert model.stem[0].out_channels == 8 and model.branch[0][0].in_channels == 4
    assert model.branch[1].groups == model.branch[1].out_channels == 4


def test_depthwise_squeeze_excitation_and_flatten_into_linear():
    model = randomise_norms(DepthwiseSE())
    x = torch.randn(1, 3, 16, 16)
    check_shrink(model, x, amount=0.5)
    assert model.dw[0].groups == model.dw[0].in_channels == model.se_expand.out_channels == 12
    assert model.fc.in_features == 8 * 16  # kept channels x the 4x4 positions each
    assert model.fc.out_features == 6


def test_grouped_convolution_keeps_its_groups_and_narrows_them():
    model = randomise_norms(Grouped())
    report = check_shrink(model, torch.randn(1, 3, 8, 8), amount=0.5)
    conv = model.g[0]
    assert (conv.groups, conv.in_channels, conv.out_channels, conv.weight.shape[1]) == (4, 16, 16, 4)
    assert report.macs_ratio < 0.35  # the grouped conv keeps a quarter of its MACs (the stem, with 3 inputs, half)


def test_grouped_query_attention_heads_and_channels():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 32)
    model = GQAttention().eval()
    graph = build_graph(model, x)
    heads = graph.groups("head")
    assert [g.size for g in heads] == [2]  # kv groups; the query heads of a group go with it
    check_shrink(model, x, amount=0.5, granularity="head")
    assert (model.q.out_features, model.k.out_features, model.o.in_features) == (32, 8, 32)
    model = GQAttention().eval()
    check_shrink(model, x, amount=0.5)
    assert (model.q.out_features, model.k.out_features, model.up.out_features) == (32, 8, 32)
    assert model.head_dim == 4


def test_hidden_size_under_normalisation_needs_prune_normalized():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.norm, self.fc, self.out = nn.Linear(4, 16), nn.LayerNorm(16), nn.Linear(16, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = self.embed(x)
            h = h + self.fc(self.norm(h))
            return self.out(self.norm(h))

    x = torch.randn(2, 4)
    graph = build_graph(Block(), x)
    assert not graph.groups()
    assert any("layer norm" in r for r in graph.why_frozen("norm.weight")[0])
    model = Block().eval()
    check_shrink(model, x, amount=0.5, prune_normalized=True)
    assert model.norm.normalized_shape == (8,)


# -- errors and safety -------------------------------------------------------------------------------
class Spectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.a(x)
        x = torch.fft.fft(x, dim=1).real  # mixes channels in a way secateurs has no rule for
        return self.b(x)


def test_unknown_operation_is_an_error_naming_op_and_module():
    with pytest.raises(UnsupportedOperationError, match=r"fft.*module '<model>'"):
        build_graph(Spectral(), torch.randn(1, 3, 4, 4))
    graph = build_graph(Spectral(), torch.randn(1, 3, 4, 4), strict=False)
    assert not graph.groups() and graph.warnings


def test_a_size_read_from_an_attribute_fails_verification_and_restores_the_model():
    class Reshaper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.a, self.b = 8, nn.Conv2d(3, 8, 1), nn.Linear(8 * 4, 2)

        def forward(self, x):
            return self.b(self.a(x).view(x.shape[0], self.c * 4))

    model = Reshaper().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOperationError, match="restored"):
        shrink(model, torch.randn(1, 3, 2, 2), amount=0.5)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.a.out_channels == 8


def test_unstructured_masks_are_sliced_with_the_weights():
    model = randomise_norms(Residual())
    secateurs.prune(model, 0.3, include="body.*")
    x = torch.randn(1, 3, 8, 8)
    shrink(model, x, amount=0.5)
    mask = secateurs.get_mask(model.body[1], "weight")
    assert mask.shape == model.body[1].weight.shape == (8, 8, 3, 3)
    assert torch.all(model.body[1].weight[~mask] == 0) and 0.2 < 1 - mask.float().mean() < 0.4


# -- options -----------------------------------------------------------------------------------------
def test_ignore_round_to_min_keep_and_per_layer():
    x = torch.randn(1, 3, 8, 8)
    model = randomise_norms(Concat())
    shrink(model, x, amount=0.5, exclude=["b"])
    assert model.b[0].out_channels == 12 and model.a[0].out_channels == 4
    model = randomise_norms(Concat())
    shrink(model, x, amount=0.9, round_to=4, min_keep=2)
    assert model.b[0].out_channels == 4 and model.a[0].out_channels == 4
    model = randomise_norms(Concat())
    shrink(model, x, amount=0.5, per_layer={"a.*": 0.25})
    assert (model.a[0].out_channels, model.b[0].out_channels) == (6, 6)
    with pytest.raises(SelectionError):
        shrink(randomise_norms(Concat()), x, amount=0.5, per_layer={"nothing*": 0.5})
    with pytest.raises(PruningError):
        shrink(randomise_norms(Concat()), x, amount=1.0)


def test_global_scope_aggregate_and_criteria_plug_in():
    x = torch.randn(1, 3, 8, 8)
    model = randomise_norms(Concat())
    report = shrink(model, x, amount=0.5, scope="global", aggregate="mean")
    assert sum(g.after for g in report.groups) == sum(g.before for g in report.groups) // 2
    sizes = []
    for _ in range(2):
        model = randomise_norms(Concat())
        torch.manual_seed(1)
        model.load_state_dict(randomise_norms(Concat()).state_dict())
        report = shrink(model, x, amount=0.5, method="random", seed=3)
        sizes.append(model.merge[0].weight.clone())
    assert torch.equal(*sizes)

    class ByGroup(secateurs.Criterion):
        name = "by-group"

        def score_group(self, group, graph):
            return torch.arange(group.size, dtype=torch.float32)  # keeps the last channels

    model = randomise_norms(Concat())
    full = model.a[0].weight.detach().clone()
    shrink(model, x, amount=0.5, method=ByGroup())
    assert torch.equal(model.a[0].weight, full[4:])


class AddsItsInput(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return x + self.layer(x)


def test_aggregate_defaults_to_the_criterion_s_own():
    class Flat(secateurs.Criterion):
        """Every weight scores 1 and a tensor its mean: summed, a block with more tensors scores higher."""

        name = "flat"
        aggregate = "mean"

        def score(self, param, target):
            return torch.ones_like(param)

        def reduce(self, scores, dims):
            return scores.mean(dim=dims) if dims else scores

    def blocks() -> nn.Sequential:
        return nn.Sequential(*(AddsItsInput(nn.Linear(4, 4, bias=bias)) for bias in (True, False, True)))

    x = torch.randn(2, 4)
    assert shrink(blocks(), x, 1, granularity="layer", method=Flat()).removed_layers == ["0"]  # all tie: first goes
    assert shrink(blocks(), x, 1, granularity="layer", method=Flat(), aggregate="sum").removed_layers == ["1"]


def test_structure_record_rebuilds_a_fresh_instance():
    model = randomise_norms(DepthwiseSE())
    x = torch.randn(1, 3, 16, 16)
    shrink(model, x, amount=0.5)
    shrink(model, x, amount=0.25)
    fresh = DepthwiseSE()
    apply_structure(fresh, structure_of(model))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))
