"""``hf:PATH``: a local Hugging Face model directory, with its weights if present, else random init.

The class comes from ``config.architectures`` (so it fits the saved weights); example inputs are the
tokenised sample text when the directory has a tokenizer, random token ids otherwise, or random pixels
for a vision model. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from secateurs.errors import InputShapeError, ModelSpecError
from secateurs.runtime import Inputs
from secateurs.sources.common import check_token_shape, require
from secateurs.sources.model import LoadedModel, Shape, random_input
from secateurs.sources.registry import register_source

_SAMPLE_TEXT = (
    "Pruning removes the weights of a network that matter least, so that the model gets smaller and, "
    "when whole channels go, faster. Gardeners prune trees for the same reason: what is left grows better. "
)
_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
)
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")
#: What rebuilds the architecture and its tokenizer without the weights.
_PORTABLE_FILES = (
    "config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
    "tokenizer.model", "chat_template.jinja",
)  # fmt: skip


def _model_class(transformers: Any, config: Any) -> tuple[Any, str]:
    """The class named in ``config.architectures`` (it matches the saved weights), else AutoModel."""
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            task = next((task for suffix, task in _TASKS if name.endswith(suffix)), "feature-extraction")
            return cls, task
    return transformers.AutoModel, "feature-extraction"


def _is_vision_config(config: Any) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels") and not hasattr(config, "vocab_size")


def _tokenizer(path: Path, transformers: Any) -> Any:
    """The directory's tokenizer, or None when it has none that loads offline."""
    if not any((path / name).exists() for name in _TOKENIZER_FILES):
        return None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        return None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _token_shape(config: Any, input_shape: Shape | None) -> tuple[int, int]:
    """``BATCH,SEQ_LEN`` of the example input (default ``1,min(128, positions)``), within the model's positions."""
    check_token_shape("a text model", input_shape, "1,128")
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    batch, length = input_shape or (1, min(128, limit))
    if length > limit:
        raise InputShapeError(
            f"sequence length {length} exceeds the model's {limit} positions; use --input-shape {batch},{limit} or less"
        )
    return batch, length


def _text_inputs(path: Path, config: Any, input_shape: Shape | None, transformers: Any) -> dict[str, torch.Tensor]:
    batch, length = _token_shape(config, input_shape)
    tokenizer = _tokenizer(path, transformers)
    if tokenizer is not None:
        text = [_SAMPLE_TEXT * (1 + length // 20)] * batch
        encoded = tokenizer(text, max_length=length, truncation=True, padding="max_length", return_tensors="pt")
        wanted = ("input_ids", "attention_mask", "token_type_ids")
        inputs = {key: value for key, value in encoded.items() if key in wanted}
    else:
        generator = torch.Generator().manual_seed(0)
        vocab = int(getattr(config, "vocab_size", 1000))
        inputs = {
            "input_ids": torch.randint(min(5, vocab - 1), vocab, (batch, length), generator=generator),
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
        }
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = inputs["input_ids"][:, : max(1, min(length, 16))]
    return inputs


def _vision_inputs(config: Any, input_shape: Shape | None) -> dict[str, torch.Tensor]:
    size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
    return {"pixel_values": random_input(input_shape or (1, config.num_channels, *size))}


def portable_hf_files(argument: str) -> list[Path]:
    """Config, generation and tokenizer files of the directory: all a saved model needs of it."""
    path = Path(argument).expanduser().resolve()
    return [path / name for name in _PORTABLE_FILES if (path / name).is_file()]


@register_source(
    "hf", "hf:PATH", "local Hugging Face model directory (config.json; weights if present, else random init)",
    portable=portable_hf_files,
)
def load_hf(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    spec = f"hf:{argument}"
    transformers = require("transformers", spec, "transformers", "hf")
    path = Path(argument).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ModelSpecError(
            f"{spec}: {path} is not a Hugging Face model directory (no config.json); "
            "hf: takes a local directory, nothing is downloaded"
        )
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    cls, task = _model_class(transformers, config)
    if _is_vision_config(config):
        inputs: Inputs = _vision_inputs(config, input_shape)
        shape = tuple(inputs["pixel_values"].shape)
        task = task if task != "feature-extraction" else "image-feature-extraction"
    else:
        inputs = _text_inputs(path, config, input_shape, transformers)
        shape = tuple(inputs["input_ids"].shape)
    if weights and any((path / name).exists() for name in _WEIGHTS):
        model = cls.from_pretrained(path, local_files_only=True)
    else:
        model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
    return LoadedModel(model, inputs, f"hf:{path}", task, shape, info={"config": config.to_dict().get("model_type")})
