"""``hf``: a Hugging Face model directory (``save_pretrained``), loaded by ``transformers.AutoModel*.from_pretrained``
with no secateurs installed, its config describing the pruned model.

A masked model always fits its config. A shrunk one fits when every layer kept the same sizes and each
size has a config field the architecture reads: LLaMA-family models (heads, key/value heads, MLP width,
hidden size, layers), ViT (heads, through ``head_dim``), and any architecture after removing whole layers or
MLP neurons. It does not fit when layers differ (a global shrink), or when heads were narrowed in an
architecture that derives the head size from ``hidden_size / num_attention_heads`` (BERT, MiniLM, GPT-2) or
scales attention by ``1/sqrt(head size)`` (a narrowed head keeps the scale of its original width, which no
config field sets). The format checks this before any work by building the architecture from the config on
the meta device and comparing every tensor shape and every float attribute of every module (the attention
scale); it refuses with the first difference. After writing, the directory is loaded back with transformers
and its outputs compared with the model's, which catches anything else.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.export.formats import Check, ExportError, ExportFormat, UnsupportedFormatError, Written, register_format
from secateurs.export.prepare import float_bound, max_abs_diff, reference_outputs, without_cache
from secateurs.runtime import Inputs, call_model
from secateurs.structural.hf import is_hf_model, observed_sizes

HF_FOLDER = "hf"
#: Auto classes and the transformers table that maps a model type to the class each builds, most specific first.
_AUTO_CLASSES = (
    ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModel", "MODEL_MAPPING_NAMES"),
)


def auto_class_name(model: nn.Module) -> str:
    """The transformers Auto class that rebuilds ``model``'s class from its config; the class's own name when
    no Auto class does."""
    from transformers.models.auto import modeling_auto

    name, model_type = type(model).__name__, getattr(model.config, "model_type", None)
    for auto, table in _AUTO_CLASSES:
        entry = getattr(modeling_auto, table, {}).get(model_type)
        if name == entry or (isinstance(entry, (tuple, list)) and name in entry):
            return auto
    return name


def described_config(model: nn.Module) -> Any:
    """A copy of ``model.config`` that also states the head size when it differs from the one the config
    derives (architectures such as ViT read ``head_dim`` when present; the others ignore it)."""
    config = copy.deepcopy(model.config)
    head_dims = observed_sizes(model)["head_dim"]
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if len(head_dims) == 1 and getattr(config, "head_dim", None) is None and heads and hidden:
        head_dim = next(iter(head_dims))
        if head_dim != hidden // heads:
            config.head_dim = head_dim
    return config


def _floats(module: nn.Module) -> dict[str, float]:
    return {key: value for key, value in vars(module).items() if isinstance(value, float)}


def _attribute_misfit(model: nn.Module, fresh: nn.Module) -> str:
    """The first float attribute (an attention scale, a norm's epsilon) that a build from the config would
    change. Sizes are compared through the tensor shapes; an int attribute left stale by surgery but unused
    (a layer's ``hidden_size``) must not refuse a model that rebuilds exactly."""
    rebuilt = dict(fresh.named_modules())
    for name, module in model.named_modules():
        expected = _floats(rebuilt.get(name, module))
        for attr, value in _floats(module).items():
            if attr in expected and not math.isclose(value, expected[attr], rel_tol=1e-6):
                why = (
                    " (attention keeps the scale 1/sqrt(head size) of its heads' original width, and the config "
                    "derives the head size from hidden_size / num_attention_heads: no field sets it apart)"
                    if attr == "scaling"
                    else ""
                )
                return f"{name}.{attr} is {value:g} but config.json builds {expected[attr]:g}{why}"
    return ""


def config_misfit(model: nn.Module, config: Any) -> str:
    """Why ``config`` does not rebuild ``model`` (layers that differ in a size, a tensor shape, a module
    attribute), or '' when it does. The architecture is built on the meta device: no memory, no weights."""
    for field, values in observed_sizes(model).items():
        if len(values) > 1:
            return (
                f"its layers differ in {field} ({', '.join(map(str, sorted(values)))}) and config.json holds one value"
            )
    try:
        with torch.device("meta"):
            fresh = type(model)(config)
    except Exception as exc:  # noqa: BLE001 - any failure means the config does not build the model
        return f"the architecture cannot be built from it ({type(exc).__name__}: {exc})"
    expected = {key: tuple(t.shape) for key, t in fresh.state_dict().items()}
    for key, tensor in model.state_dict().items():
        if expected.get(key) != tuple(tensor.shape):
            built = f"builds {expected[key]}" if key in expected else "has no such tensor"
            head = (
                " (this architecture takes its head size from hidden_size / num_attention_heads"
                + (" and ignores head_dim)" if "head_dim" in config.to_dict() else ")")
                if hasattr(config, "num_attention_heads") and any(part in key for part in ("attn", "attention"))
                else ""
            )
            return f"{key} is {tuple(tensor.shape)} but config.json {built}{head}"
    return _attribute_misfit(model, fresh)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[Any]:
    """transformers without progress bars or warnings for the duration (their settings come back after)."""
    import transformers

    logging = transformers.utils.logging
    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield transformers
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


@contextlib.contextmanager
def _config_swapped(model: nn.Module, config: Any) -> Iterator[None]:
    original = model.config
    model.config = config
    try:
        yield
    finally:
        model.config = original


@register_format("hf")
@dataclass
class HuggingFace(ExportFormat):
    summary = "a Hugging Face directory (save_pretrained): config.json, safetensors weights, tokenizer"
    requires = (("transformers", "transformers"),)
    source_files_into = HF_FOLDER

    def check(self, model: nn.Module) -> None:
        super().check(model)
        if not is_hf_model(model):
            raise UnsupportedFormatError(
                f"the hf format saves Hugging Face transformers models and {type(model).__name__} is not one; "
                "choose another format: formats='torch-export' (or onnx, safetensors)"
            )
        misfit = config_misfit(model, described_config(model))
        if misfit:
            raise UnsupportedFormatError(
                f"the hf format cannot save this {type(model).__name__}: config.json cannot describe it: {misfit}; "
                "choose another format: formats='torch-export' (or onnx, safetensors: any shape), or shrink with "
                "the same sizes in every layer and heads of their original width"
            )

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        target = directory / HF_FOLDER
        auto = auto_class_name(model)
        with _quiet_transformers() as transformers:
            with _config_swapped(model, described_config(model)):
                model.save_pretrained(target)
            loaded = getattr(transformers, auto).from_pretrained(target).eval()
        with torch.no_grad(), without_cache(loaded):
            diff, scale = max_abs_diff(reference_outputs(model, example_inputs), call_model(loaded, example_inputs))
        check = Check(diff, scale, float_bound(scale))
        if diff > check.bound:
            raise ExportError(
                f"the saved Hugging Face model differs from the model by {diff:.3g} (bound {check.bound:.3g})"
            )
        load = f"import transformers\nmodel = transformers.{auto}.from_pretrained({HF_FOLDER!r})"
        return Written({HF_FOLDER: load}, check)

    def load(self, directory: Path, threads: int | None = None) -> nn.Module:
        import transformers

        target = directory / HF_FOLDER
        with _quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(target)
            cls = getattr(transformers, (config.architectures or ["AutoModel"])[0], transformers.AutoModel)
            return cls.from_pretrained(target).eval()
