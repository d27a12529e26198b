"""The shrink check can fail: a deliberately wrong surgery is caught on every family of the structural
coverage, including random-init models whose outputs vanish, and a check that proves nothing says so.

Wrong surgeries: the slicing keeps other units than the masked reference zeroed (every kept index shifted
by one), a kept slice of a cut weight is perturbed after slicing, or depth pruning removes other blocks than
the ones bypassed in the reference. Each must raise, name the layer it shows at, and restore the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from secateurs.errors import PruningError
from secateurs.structural import api, build_graph, depth, shrink
from secateurs.structural.verify import compare_point

pytestmark = pytest.mark.xdist_group("structural")
torchvision = pytest.importorskip("torchvision")


def image(size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def tokens(vocab: int = 128, n: int = 12) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))}


def tv(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, **kwargs).eval()


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build().eval()


def hf():
    return pytest.importorskip("transformers")


# -- the families of the structural coverage, at their smallest configurations ---------------------------
def tv_vit() -> nn.Module:
    """torchvision zero-initialises the classification head: the outputs are exactly zero at random init."""
    return seeded(lambda: torchvision.models.vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128))


def convnext() -> nn.Module:
    cn = torchvision.models.convnext
    return seeded(lambda: cn.ConvNeXt([cn.CNBlockConfig(16, 32, 2), cn.CNBlockConfig(32, None, 1)], num_classes=10))


def swin() -> nn.Module:
    return seeded(lambda: torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[2, 2], num_classes=10))


def densenet() -> nn.Module:
    return seeded(lambda: torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16,
                                                      bn_size=2, num_classes=10))


def timm_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    return seeded(lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2))


def bert() -> nn.Module:
    t = hf()
    config = t.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    return seeded(lambda: t.BertModel(config))


def gpt2() -> nn.Module:
    t = hf()
    return seeded(lambda: t.GPT2LMHeadModel(t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=32)))


def llama() -> nn.Module:
    t = hf()
    config = t.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=8, num_key_value_heads=2, head_dim=16)
    return seeded(lambda: t.LlamaForCausalLM(config))


#: family -> (model factory, example input factory, shrink options)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], Callable[[], object], dict]] = {
    "plain CNN (resnet18)": (lambda: tv("resnet18"), image, {}),
    "depthwise (mobilenet_v3_small)": (lambda: tv("mobilenet_v3_small"), image, {}),
    "depthwise (efficientnet_b0)": (lambda: tv("efficientnet_b0"), image, {}),
    "channel shuffle (shufflenet_v2)": (lambda: tv("shufflenet_v2_x0_5"), image, {}),
    "concatenation (densenet)": (densenet, image, {}),
    "grouped conv (regnet_x_400mf)": (lambda: tv("regnet_x_400mf"), image, {}),
    "layer norm (convnext)": (convnext, image, {"prune_normalized": True}),
    "torchvision ViT (zero head)": (tv_vit, image, {"prune_normalized": True}),
    "swin": (swin, lambda: image(16), {}),
    "timm ViT": (timm_vit, image, {"prune_normalized": True}),
    "BERT heads": (bert, tokens, {"granularity": "head"}),
    "GPT-2 hidden size": (gpt2, tokens, {"prune_normalized": True}),
    "LLaMA GQA heads": (llama, tokens, {"granularity": "head"}),
    "LLaMA MLP and hidden size": (llama, tokens, {"prune_normalized": True}),
    "depth (resnet18 blocks)": (lambda: tv("resnet18"), image, {"granularity": "layer"}),
    "depth (LLaMA layers)": (llama, tokens, {"granularity": "layer", "amount": 1}),
}


@pytest.fixture(params=list(FAMILIES))
def family(request, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build, example, options = FAMILIES[request.param]
    return build(), example(), {"amount": 0.5, **options}


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_restored(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


# -- wrong surgeries --------------------------------------------------------------------------------------
def slice_other_units(monkeypatch, last_group_only: bool = False) -> None:
    """The slicing keeps every unit's neighbour (index + 1): not the units the reference kept. With
    ``last_group_only`` only the group nearest the output is wrong."""
    real = api.slice_tensors

    def shifted(graph, keep, undo):
        position = {name: i for i, name in enumerate(graph.tensors)}
        last = max(keep, key=lambda cls: min(position[m.tensor] for m in graph.members[cls]))
        wrong = {cls: np.unique((k + 1) % graph.store.size(cls)) if cls == last or not last_group_only else k
                 for cls, k in keep.items()}
        return real(graph, wrong, undo)

    monkeypatch.setattr(api, "slice_tensors", shifted)


def perturb_a_kept_slice(monkeypatch) -> None:
    """After slicing, the first kept slice of the first cut weight changes."""
    real = api.slice_tensors

    def perturbed(graph, keep, undo):
        changed = real(graph, keep, undo)
        name = next(n for n in changed if graph.holders[n][0].kind == "param" and graph.tensors[n].dim() > 1)
        holder = graph.holders[name][0]
        with torch.no_grad():
            graph.named[holder.module_name]._parameters[holder.attr][0].add_(0.5)
        return changed

    monkeypatch.setattr(api, "slice_tensors", perturbed)


def remove_other_blocks(monkeypatch, model: nn.Module, x) -> None:
    """Depth pruning removes another removable block of the same container than the one bypassed."""
    removable = depth.removable_blocks(build_graph(model, x))
    real = depth.remove_blocks

    def swapped(model, named, blocks, undo):
        chosen = {b.name for b in blocks}
        others = [next((o for o in removable if o.container == b.container and o.name not in chosen), b) for b in blocks]
        return real(model, named, others, undo)

    monkeypatch.setattr(depth, "remove_blocks", swapped)


# -- every family ---------------------------------------------------------------------------------------
def test_a_correct_shrink_is_verified_at_intermediate_activations(family):
    model, x, options = family
    report = shrink(model, x, **options)
    assert report.verified is True, report.verification
    assert report.points_checked > 2 and report.max_rel_diff <= report.tolerance
    assert report.verification.startswith(f"verified at {report.points_checked} points")


def test_a_wrong_surgery_fails_at_a_layer_and_restores_the_model(family, monkeypatch):
    model, x, options = family
    before = state(model)
    if options.get("granularity") == "layer":
        remove_other_blocks(monkeypatch, model, x)
    else:
        slice_other_units(monkeypatch)
    with pytest.raises(PruningError, match=r"verification failed: .* at the output of module '[^']+'"):
        shrink(model, x, **options)
    assert_restored(model, before)


@pytest.mark.parametrize("build", [lambda: tv("mobilenet_v3_small"), lambda: tv("efficientnet_b0"), tv_vit],
                         ids=["mobilenet_v3_small", "efficientnet_b0", "vit"])
def test_a_wrong_last_group_is_caught_although_the_outputs_vanish(build, monkeypatch):
    """Outputs of 1e-10, 1e-14 and exactly 0: only the activations around the last cut group can tell."""
    model = build()
    slice_other_units(monkeypatch, last_group_only=True)
    with pytest.raises(PruningError, match="at the output of module") as failure:
        shrink(model, image(), 0.5, prune_normalized=True)
    assert "model output" not in str(failure.value)


@pytest.mark.parametrize("build", [lambda: tv("resnet18"), tv_vit], ids=["resnet18", "vit"])
def test_a_perturbed_kept_slice_fails(build, monkeypatch):
    model = build()
    before = state(model)
    perturb_a_kept_slice(monkeypatch)
    with pytest.raises(PruningError, match="verification failed: the shrunk model differs from the masked model at the output of module"):
        shrink(model, image(), 0.5, prune_normalized=True)
    assert_restored(model, before)


# -- what the report says ---------------------------------------------------------------------------------
def test_vanishing_outputs_are_verified_at_activations_and_said_to_vanish():
    model = tv_vit()
    with torch.no_grad():
        assert not model(image()).any()  # the zero-initialised head
    report = shrink(model, image(), 0.5, prune_normalized=True)
    assert report.verified and "outputs vanish" in report.verification
    assert report.verification in str(report)


def test_nothing_meaningful_to_compare_is_not_verified():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 4, bias=False)).eval()
    x = torch.randn(2, 8) * 1e-37  # every activation below float32's normal range
    report = shrink(model, x, 0.5)
    assert report.verified is False and report.points_checked == 0
    assert report.verification.startswith("not verified: every compared value is below")
    assert report.to_dict()["verified"] is False and "not verified" in str(report)


def test_verify_false_reports_not_checked_and_atol_is_absolute():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    report = shrink(model, torch.randn(2, 8), 0.5, verify=False)
    assert report.verified is None and report.verification == "not checked (verify=False)"
    report = shrink(model, torch.randn(2, 8), 0.5, atol=1e-2)
    data = report.to_dict()
    assert data["verified"] and data["tolerance"] == 1e-2 and "absolute tolerance" in data["verification"]
    assert {"points_checked", "max_abs_diff", "max_rel_diff", "verification"} <= data.keys()


def test_points_compare_relative_to_their_own_scale():
    ref = torch.tensor([1e-6, -2e-6, float("inf")])
    assert compare_point("p", ref, ref * (1 + 1e-5)).ok  # rounding at any scale passes
    assert not compare_point("p", ref, ref + torch.tensor([1e-8, 0.0, 0.0])).ok  # 0.5% of the largest value fails
    assert compare_point("p", ref.half(), (ref * 1.01).half()).ok  # half precision is looser
    assert not compare_point("p", ref, torch.tensor([float("nan"), 0.0, 0.0])).ok
    assert compare_point("p", ref, ref[:2]).problem.startswith("has shape (2,)")
    tiny = compare_point("p", torch.full((3,), 1e-40), torch.zeros(3))
    assert tiny.ok and tiny.vanishing  # lost to underflow: neither passes nor fails anything
