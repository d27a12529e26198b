"""The hf format: Hugging Face directories that transformers loads with no secateurs, for every architecture
shrink supports, and a refusal naming what config.json cannot describe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import secateurs as sc
from secateurs.export import UnsupportedFormatError, export
from secateurs.structural import shrink

pytestmark = pytest.mark.xdist_group("structural")


def tokens(batch: int = 1, length: int = 12, vocab: int = 128) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))}


def llama(transformers):
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=16,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def vit(transformers):
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    torch.manual_seed(0)
    return transformers.ViTModel(config).eval()


def bert(transformers):
    config = transformers.BertConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def gpt2(transformers):
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=32)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


_LOAD_WITHOUT_SECATEURS = textwrap.dedent("""
    import importlib.abc, sys
    class NoSecateurs(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "secateurs":
                raise ImportError("secateurs must not be needed to load an export")
    sys.meta_path.insert(0, NoSecateurs())
    import torch, transformers
    for directory, auto in zip(sys.argv[1::2], sys.argv[2::2]):
        case = torch.load(f"{directory}/case.pt")
        model = getattr(transformers, auto).from_pretrained(f"{directory}/hf").eval()
        model.config.use_cache = False
        with torch.no_grad():
            out = model(**case["inputs"])[0]
        assert torch.allclose(out, case["expected"], atol=1e-5), (directory, (out - case["expected"]).abs().max())
    print("ok", len(sys.argv) // 2)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Four architectures pruned or shrunk as far as their configs can describe, exported to hf; per case the
    directory, the Auto class, and the inputs with the model's outputs saved for a separate process."""
    transformers = pytest.importorskip("transformers")
    model = llama(transformers)  # grouped-query attention: heads, key/value heads, MLP and hidden size shrunk
    shrink(model, tokens(), amount=0.5, granularity="head")
    shrink(model, tokens(), amount=0.5, prune_normalized=True)
    cases = [("llama", model, tokens(), "AutoModelForCausalLM")]
    model = vit(transformers)
    shrink(model, {"pixel_values": torch.randn(1, 3, 32, 32)}, amount=0.5, granularity="head")
    cases.append(("vit", model, {"pixel_values": torch.randn(2, 3, 32, 32)}, "AutoModel"))
    model = bert(transformers)
    sc.prune(model, 0.5)
    cases.append(("bert", model, tokens(2), "AutoModel"))
    model = gpt2(transformers)
    shrink(model, tokens(), amount=1, granularity="layer")
    cases.append(("gpt2", model, tokens(), "AutoModelForCausalLM"))
    root, done = tmp_path_factory.mktemp("hf"), {}
    for name, model, inputs, auto in cases:
        report = export(model, root / name, ["hf"], example_inputs=inputs)
        model.config.use_cache = False
        with torch.no_grad():
            torch.save({"inputs": inputs, "expected": model(**inputs)[0]}, root / name / "case.pt")
        done[name] = (root / name, auto, report)
    return done


@pytest.mark.parametrize("name", ["llama", "vit", "bert", "gpt2"])
def test_every_shrinkable_architecture_exports_to_hf(exported, name):
    _, auto, report = exported[name]
    assert report["hf"].load["hf"] == f"import transformers\nmodel = transformers.{auto}.from_pretrained('hf')"
    assert report["hf"].check.max_abs_diff <= report["hf"].check.bound  # reloaded in-process and compared


def test_hf_exports_load_with_transformers_alone(exported):
    argv = [str(item) for directory, auto, _ in exported.values() for item in (directory, auto)]
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_SECATEURS, *argv],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok 4", done.stderr[-2000:]


def test_vit_head_size_goes_into_the_config(transformers, tmp_path):
    model = vit(transformers)
    shrink(model, {"pixel_values": torch.randn(1, 3, 32, 32)}, amount=0.5, granularity="head")
    export(model, tmp_path / "vit", ["hf"], example_inputs={"pixel_values": torch.randn(1, 3, 32, 32)})
    config = transformers.AutoConfig.from_pretrained(tmp_path / "vit" / "hf")
    assert (config.num_attention_heads, config.head_dim, config.hidden_size) == (2, 16, 64)
    assert not hasattr(model.config, "head_dim")  # the user's model and its config are untouched


@pytest.mark.parametrize(
    ("make", "how", "names"),
    [
        (bert, {"amount": 0.5}, r"attention\.self\.query\.weight is \(32, 64\) but config\.json builds \(64, 64\)"),
        (gpt2, {"amount": 0.5, "prune_normalized": True}, r"attn\.scaling is 0\.25 but config\.json builds 0\.353553"),
        (llama, {"amount": 0.5, "scope": "global"}, r"its layers differ in intermediate_size \("),
    ],
    ids=["bert-narrow-heads", "gpt2-attention-scale", "llama-global"],
)
def test_what_a_config_cannot_describe_is_refused_naming_it(transformers, tmp_path, make, how, names):
    model = make(transformers)
    shrink(model, tokens(), **how)
    with pytest.raises(UnsupportedFormatError, match=names) as refused:
        export(model, tmp_path / "out", ["hf", "safetensors"], example_inputs=tokens())
    assert "formats='torch-export' (or onnx, safetensors" in str(refused.value)  # what to use instead
    if make is not llama:  # narrowed heads: the config fields that cannot describe them are named
        assert "hidden_size / num_attention_heads" in str(refused.value)
    assert not (tmp_path / "out").exists()
    export(model, tmp_path / "out", ["safetensors"], example_inputs=tokens())  # any shape


def test_int8_quantizes_linear_layers_and_the_input_embeddings(transformers, tmp_path):
    model = bert(transformers)
    sc.prune(model, 0.5)
    export(model, tmp_path / "out", ["int8"], example_inputs=tokens(2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated")
        loaded = torch.jit.load(str(tmp_path / "out" / "model.int8.pt"))
    assert hasattr(loaded.embeddings.word_embeddings, "_packed_params")  # the input embeddings are int8 too
    assert not hasattr(loaded.embeddings.token_type_embeddings, "_packed_params")
    linear = 0
    for name, sub in loaded.named_modules():
        if sub.original_name == "LinearPackedParams":
            weight, _ = torch.ops.quantized.linear_unpack(sub._packed_params)
            pruned = model.get_submodule(name.removesuffix("._packed_params")).weight == 0
            assert (weight.int_repr()[pruned] == 0).all()  # every pruned weight is an int8 zero
            linear += 1
    assert linear == 13  # 2 layers x 6, and the pooler
    other = tokens(3, 7)  # another batch size and length than traced
    with torch.no_grad():
        found, expected = loaded(**other)["last_hidden_state"], model(**other).last_hidden_state
    assert (found - expected).abs().max() < 0.05 * expected.abs().max()
