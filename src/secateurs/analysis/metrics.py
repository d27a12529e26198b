"""What a model is worth: one interface for every evaluation.

A :class:`Metric` is called on a model and returns a float; ``higher_is_better`` says which way is good,
and :meth:`Metric.drop` how much worse one value is than another, in the metric's own units (positive =
worse, whichever way the metric points). Accuracies and correlations are in points (percent, Spearman
x 100), so a drop of 1.0 means one point on every such task.

:class:`OutputMetric` is the kind computed from the model's outputs on fixed inputs held in memory
(calibration batches, windows of a text, sentences): since its inputs never change, a sensitivity scan may
reuse the activations that enter the block it perturbs (see :mod:`secateurs.analysis.reuse`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.data import Batch
from secateurs.errors import SecateursError
from secateurs.runtime import inference, model_device
from secateurs.sources import LoadedModel

MetricFunction = Callable[[nn.Module], float]
#: Called with each batch's index before the batch runs (how activation reuse knows which batch is running).
BatchHook = Callable[[int], None]


#: How a result's notes say its metric read a sample of its data.
SAMPLE_NOTE = "measured on a sample"


class EvaluationError(SecateursError, ValueError):
    """An evaluation that cannot run as asked: a bad metric spec, a file that is not what it should be."""


class Metric:
    """A number that says how good a model is; subclasses implement :meth:`evaluate`."""

    name: str = "metric"
    higher_is_better: bool = True
    #: ``"%"`` for accuracies in percent, ``"x100"`` for correlations x 100, ``""`` otherwise.
    unit: str = ""
    #: What part of its data the metric reads when limited (``"200 of 1379 sentence pairs"``), else None.
    samples: str | None = None

    def __call__(self, model: nn.Module) -> float:
        """The metric of ``model`` in eval mode without autograd (a function needing gradients enables them
        itself with ``torch.enable_grad()``); the train flags of its modules come back as they were."""
        with inference(model):
            return self.checked(self.evaluate(model))

    def evaluate(self, model: nn.Module) -> float:
        raise NotImplementedError

    def checked(self, value: Any) -> float:
        """``value`` as a float, or an :class:`EvaluationError` naming the metric."""
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvaluationError(f"metric {self.name!r} returned a {type(value).__name__}, not a number")
        return float(value)

    def drop(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference`` (positive = worse); NaN counts as infinitely worse."""
        if math.isnan(value):
            return math.inf
        return reference - value if self.higher_is_better else value - reference

    @property
    def label(self) -> str:
        """The name with its unit, for tables and axes: ``accuracy (%)``."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def sample_notes(self) -> list[str]:
        """A note for results that this metric read a sample of its data, else none."""
        return [] if self.samples is None else [f"{self.name} {SAMPLE_NOTE}: {self.samples}"]

    def describe(self) -> dict[str, Any]:
        described = {"name": self.name, "higher_is_better": self.higher_is_better, "unit": self.unit}
        return described if self.samples is None else {**described, "samples": self.samples}

    def __repr__(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        return f"{type(self).__name__}({self.label}, {direction} is better)"


class FunctionMetric(Metric):
    """A user's function ``model -> float``."""

    def __init__(self, function: MetricFunction, *, name: str | None = None, higher_is_better: bool = True,
                 unit: str = "") -> None:
        if not callable(function):
            raise EvaluationError(f"a metric must be callable as metric(model) -> float, got {type(function).__name__}")
        self.function = function
        self.name = name or getattr(function, "__name__", None) or type(function).__name__
        self.higher_is_better = higher_is_better
        self.unit = unit

    def evaluate(self, model: nn.Module) -> float:
        return self.function(model)


def as_metric(metric: Metric | MetricFunction, *, lower_is_better: bool = False) -> Metric:
    """``metric`` as a :class:`Metric`: returned as is, or a function ``model -> float`` wrapped (higher is
    better unless ``lower_is_better``, or unless the function says otherwise with ``higher_is_better = False``)."""
    if isinstance(metric, Metric):
        if lower_is_better and metric.higher_is_better:
            raise EvaluationError(f"{metric!r} is higher-is-better; drop lower_is_better or build it lower-is-better")
        return metric
    higher = getattr(metric, "higher_is_better", True) and not lower_is_better
    return FunctionMetric(metric, higher_is_better=bool(higher))


class TaskMetric(Metric):
    """The metric a model source knows for its task (:attr:`LoadedModel.evaluate`): the demo CNN's test
    accuracy (in percent here), the MiniLM source's embedding cosine to the original model."""

    def __init__(self, loaded: LoadedModel) -> None:
        if loaded.evaluate is None:
            raise EvaluationError(
                f"{loaded.spec} has no built-in task metric; use perplexity:FILE, sts:FILE, imagefolder:DIR, "
                "python:MODULE:FUNCTION or proxy"
            )
        self.evaluate_task = loaded.evaluate
        self.name = "task"  # the source's own name for it once evaluated (``accuracy`` for the demo)

    def evaluate(self, model: nn.Module) -> float:
        scores = self.evaluate_task(model)
        key = next(iter(scores))
        self.name = key
        value, self.unit = task_score(key, scores[key])
        return value


def task_score(key: str, value: float) -> tuple[float, str]:
    """A model source's task score (:attr:`LoadedModel.evaluate`) as metrics report it, with its unit: accuracies,
    fractions at the source, in percent."""
    return (100.0 * value, "%") if "accuracy" in key else (value, "")


def with_unit(value: float, unit: str) -> str:
    """``98.44%``, ``85.2 (x100)``, ``12.3``: a metric's value as tables print it."""
    return f"{value:.4g}{unit}" if unit == "%" else f"{value:.4g} ({unit})" if unit else f"{value:.4g}"


class OutputMetric(Metric):
    """A metric computed from the model's outputs on fixed batches: :meth:`measure` turns one batch's
    output into a part, :meth:`combine` the parts into the value. Batches move to the model's device."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        if not batches:
            raise EvaluationError(f"{type(self).__name__} needs at least one batch of inputs")
        self.batches = list(batches)

    def __call__(self, model: nn.Module, *, before_batch: BatchHook | None = None) -> float:  # type: ignore[override]
        device = model_device(model)
        parts = []
        with inference(model):
            for index, batch in enumerate(self.batches):
                if before_batch is not None:
                    before_batch(index)
                moved = batch.to(device)
                parts.append(self.measure(index, moved, moved.run(model)))
        return self.checked(self.combine(parts))

    def evaluate(self, model: nn.Module) -> float:
        return self(model)

    def measure(self, index: int, batch: Batch, output: Any) -> Any:
        raise NotImplementedError

    def combine(self, parts: list[Any]) -> float:
        raise NotImplementedError
