"""What loading a model gives: :class:`LoadedModel`, and the input shapes it is run with."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import ModelSpecError
from secateurs.runtime import Inputs, call_model, inference, move_to
from secateurs.storage import Manifest

Shape = tuple[int, ...]
#: ``evaluate(model) -> {"accuracy": 0.97, ...}``: a task metric for models whose task secateurs knows.
Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclass
class LoadedModel:
    """A model ready to prune and measure, with what is needed to run it.

    ``spec`` rebuilds the architecture (for a model loaded from a pruned directory it is the original
    source spec; ``directory`` and ``manifest`` are then set). ``evaluate``, when present, scores a model
    of this architecture on its task (higher is better), e.g. the demo CNN's test accuracy.
    ``training_data``, when present, is ``(train, test)`` labelled data for fine-tuning (each an
    ``(inputs, labels)`` pair of tensors or a DataLoader), which ``secateurs prune --finetune`` uses.
    """

    model: nn.Module
    example_inputs: Inputs
    spec: str
    task: str
    input_shape: Shape | None = None
    evaluate: Evaluate | None = None
    info: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None
    directory: Path | None = None
    training_data: tuple[Any, Any] | None = None

    def run(self, model: nn.Module | None = None) -> Any:
        """Forward pass of ``model`` (default: this one) on the example inputs, in eval mode without grad."""
        target = self.model if model is None else model
        with inference(target):
            return call_model(target, self.example_inputs)

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the model and the example inputs to ``device`` (in place; returns self)."""
        self.model.to(device)
        self.example_inputs = move_to(self.example_inputs, device)
        return self


def parse_input_shape(text: str | Sequence[int]) -> Shape:
    """``"1,3,224,224"`` (or ``1x3x224x224``, or a sequence) as a tuple of positive ints."""
    if isinstance(text, str):
        body = text.strip().strip("()[]")
        shape = (
            tuple(int(p) for p in re.split(r"\s*[,x]\s*|\s+", body))
            if re.fullmatch(r"\s*\d+(\s*[,x]\s*\d+|\s+\d+)*\s*", body)
            else ()
        )
    else:
        shape = tuple(int(p) for p in text)
    if not shape or any(size <= 0 for size in shape):
        raise ModelSpecError(f"input shape {text!r} is not a list of positive integers; write it like 1,3,224,224")
    return shape


def random_input(shape: Shape) -> torch.Tensor:
    """A standard-normal example input, the same on every run (its own generator; the global one is untouched)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))
