"""Cheap metrics for sweeps, computed on a calibration batch held in memory.

* labelled batches (the ``(x, y)`` of a DataLoader, a model's own training data): the mean cross-entropy of
  the output logits against the labels;
* a causal language model: the mean next-token cross-entropy (its inputs are its own labels);
* anything else: the distance of the outputs to the dense model's, ``||out - dense|| / ||dense||`` over every
  floating-point output tensor (0 = unchanged, 1 = as far as outputting zeros). ``squared=True`` gives its
  square, which is what adds up across layers: errors that layers pruned apart make independently add in
  quadrature, so the sum of each layer's squared distance predicts the squared distance of all pruned
  together, as an allocation's search assumes of a scan's drops.

All are lower-is-better and need no task data, so they suit sensitivity scans of hundreds of evaluations;
check the units they rank fragile against the real task metric before trusting an allocation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.analysis.metrics import EvaluationError, OutputMetric
from secateurs.data import Batch, load_calibration
from secateurs.data.calibration import (
    CalibrationSource,
    features_batch,
    model_max_length,
)
from secateurs.recovery.distill import logits_of
from secateurs.runtime import inference, model_device
from secateurs.structural.trace import output_tensors

#: Calibration size of the proxy for text sources: 32 windows of 128 tokens (a few seconds per evaluation
#: on a small transformer; sweeps make hundreds).
PROXY_SAMPLES = 32
PROXY_SEQ_LEN = 128
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_IGNORE = -100


def is_causal_lm(model: nn.Module) -> bool:
    """Hugging Face causal language models, recognised by class name (no import of transformers)."""
    return any(cls.__name__.endswith(_CAUSAL_SUFFIXES) for cls in type(model).__mro__)


def next_token_nll(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[float, int]:
    """Summed cross-entropy of each next token given the ones before it, and how many tokens were predicted."""
    labels = input_ids[:, 1:]
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask[:, 1:] == 0, _IGNORE)
    predicted = logits[:, :-1].float()
    loss = F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), labels.reshape(-1), ignore_index=_IGNORE,
                           reduction="sum")
    return float(loss), int((labels != _IGNORE).sum())


def _mean(parts: list[tuple[float, int]]) -> float:
    total, count = (sum(values) for values in zip(*parts))
    return total / count if count else math.nan


class LabelLoss(OutputMetric):
    """Mean cross-entropy of the output logits against each batch's labels (``Batch.target``)."""

    name = "loss"
    higher_is_better = False

    def measure(self, index: int, batch: Batch, output: Any) -> tuple[float, int]:
        logits, target = logits_of(output), batch.target
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
        return float(loss), target.numel()

    def combine(self, parts: list[tuple[float, int]]) -> float:
        return _mean(parts)


class NextTokenLoss(OutputMetric):
    """Mean next-token cross-entropy of a causal language model (the log of its perplexity)."""

    name = "loss"
    higher_is_better = False

    def measure(self, index: int, batch: Batch, output: Any) -> tuple[float, int]:
        return next_token_nll(logits_of(output), batch.kwargs["input_ids"], batch.kwargs.get("attention_mask"))

    def combine(self, parts: list[tuple[float, int]]) -> float:
        return _mean(parts)


def _float_outputs(output: Any) -> list[torch.Tensor]:
    return [t.detach() for t in output_tensors(output) if t.is_floating_point()]


class OutputDistance(OutputMetric):
    """Relative L2 distance of the outputs to those of the model given here (the dense one), over every
    floating-point output tensor of every batch: 0 = unchanged, 1 = as far as outputting zeros; its square
    with ``squared`` (see the module docstring)."""

    name = "output_distance"
    higher_is_better = False

    def __init__(self, model: nn.Module, batches: Sequence[Batch], *, squared: bool = False) -> None:
        super().__init__(batches)
        self.squared = squared
        if squared:
            self.name = "squared_output_distance"
        device = model_device(model)
        with inference(model):
            self.reference = [_float_outputs(batch.to(device).run(model)) for batch in self.batches]
        if not any(self.reference):
            raise EvaluationError("the model's outputs hold no floating-point tensor to compare; use another metric")

    def measure(self, index: int, batch: Batch, output: Any) -> tuple[float, float]:
        outputs, reference = _float_outputs(output), self.reference[index]
        if [t.shape for t in outputs] != [t.shape for t in reference]:
            raise EvaluationError("the model's outputs changed in number or shape; output distance cannot compare them")
        squared_error = sum(float((o.double() - r.to(o.device).double()).square().sum()) for o, r in zip(outputs, reference))
        squared_norm = sum(float(r.double().square().sum()) for r in reference)
        return squared_error, squared_norm

    def combine(self, parts: list[tuple[float, float]]) -> float:
        error, norm = (sum(values) for values in zip(*parts))
        if norm == 0:
            return 0.0 if error == 0 else math.inf
        return error / norm if self.squared else math.sqrt(error / norm)


def example_batch(model: nn.Module, example_inputs: Any) -> Batch:
    """The model's example inputs (a tuple of arguments or a dict of features) as one batch."""
    if isinstance(example_inputs, Mapping):
        return features_batch(model, example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return Batch(args=tuple(example_inputs))
    return Batch(args=(example_inputs,))


def proxy_batches(model: nn.Module, calibration: CalibrationSource | None, example_inputs: Any = None, *,
                  num_samples: int | None = None, seq_len: int | None = None, **options: Any) -> list[Batch]:
    """The proxy's batches: from ``calibration`` (any source :func:`secateurs.data.load_calibration` takes; text
    is cut into 32 windows of 128 tokens unless told otherwise), else the example inputs."""
    if calibration is None:
        if example_inputs is None:
            raise EvaluationError("the proxy metric needs inputs: pass calibration=... or example_inputs=...")
        return [example_batch(model, example_inputs)]
    text = isinstance(calibration, (str, os.PathLike))
    samples = num_samples or (PROXY_SAMPLES if text else None)
    length = seq_len or min(PROXY_SEQ_LEN, model_max_length(model) or PROXY_SEQ_LEN)
    return list(load_calibration(calibration, model, num_samples=samples, seq_len=length, **options))


def proxy_metric(model: nn.Module, calibration: CalibrationSource | None = None, *, example_inputs: Any = None,
                 loss: bool | None = None, squared: bool = False, **calibration_options: Any) -> OutputMetric:
    """The cheap proxy of ``model`` (the dense one, before any pruning) on a calibration batch.

    ``loss=None`` (default) takes the loss where labels exist (labelled batches, causal LMs), else the output
    distance to the dense model; ``loss=False`` always takes the distance; ``squared=True`` takes its square
    (what adds up across layers, for scans an allocation reads). ``calibration_options``
    (``num_samples``, ``seq_len``, ``tokenizer``, ``seed``, ``batch_size``) shape a text source.
    """
    if squared and loss:
        raise EvaluationError("squared=True squares the output distance, not a loss: drop loss=True")
    batches = proxy_batches(model, calibration, example_inputs, **calibration_options)
    if squared:
        return OutputDistance(model, batches, squared=True)
    labelled = all(batch.target is not None for batch in batches)
    causal = is_causal_lm(model) and all("input_ids" in batch.kwargs for batch in batches)
    if loss and not (labelled or causal):
        raise EvaluationError("loss=True needs labelled batches ((inputs, labels) pairs) or a causal language model")
    if loss is not False and labelled:
        return LabelLoss(batches)
    if loss is not False and causal:
        return NextTokenLoss(batches)
    return OutputDistance(model, batches)
