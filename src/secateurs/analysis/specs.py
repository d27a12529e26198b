"""Metric specs: one short string per evaluation, as ``secateurs ... --eval SPEC`` takes it.

==========================  ===========================================================================
``demo`` (or ``task``)      the model source's own task metric: the demo CNN's test accuracy (%)
``perplexity:FILE``         perplexity of a causal language model on a text file (lower is better)
``sts:FILE``                Spearman x 100 of a sentence encoder on an STS-benchmark-format file
``imagefolder:DIR``         top-1 (%) of an image classifier on a torchvision ImageFolder directory
``python:MODULE:FUNCTION``  ``FUNCTION(model) -> float`` from a module or a ``.py`` file; higher is better
                            unless ``FUNCTION.higher_is_better = False``; FUNCTION may also be a ``Metric``
``proxy``                   loss where labels exist, else output distance to the dense model, on a
                            calibration batch: cheap, for sweeps (see :mod:`secateurs.analysis.proxy`)
==========================  ===========================================================================

``perplexity``, ``sts`` and ``imagefolder`` also take a sample limit (:func:`parse_metric`'s ``samples``: that many
windows, sentence pairs or images, spread over the file or folder), checked with the spec by :func:`check_samples`.

:func:`check_metric_spec` checks a spec without the model (syntax, files, folders, that the module can be
found), so a command line refuses a bad one before loading anything; :func:`parse_metric` then builds the
metric for the loaded model.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secateurs.analysis.metrics import (
    EvaluationError,
    FunctionMetric,
    Metric,
    TaskMetric,
)
from secateurs.analysis.proxy import proxy_metric
from secateurs.analysis.tasks import STS_LEAST_PAIRS, imagefolder_metric, perplexity_metric, sts_metric
from secateurs.data import sample_examples
from secateurs.data.calibration import CalibrationSource
from secateurs.sources import LoadedModel
from secateurs.usercode import check_module, split_spec, user_function

#: kind -> how it is written (None: the kind takes no argument).
METRIC_SPECS: dict[str, str | None] = {
    "demo": None,
    "task": None,
    "perplexity": "perplexity:FILE",
    "sts": "sts:FILE",
    "imagefolder": "imagefolder:DIR",
    "python": "python:MODULE:FUNCTION",
    "proxy": None,
}
METRIC_USAGE = "demo, perplexity:FILE, sts:FILE, imagefolder:DIR, python:MODULE:FUNCTION or proxy"
#: kind -> what a sample limit counts, for the kinds that take one.
SAMPLED_KINDS = {"perplexity": "windows of text", "sts": "sentence pairs", "imagefolder": "images"}
#: kind -> why it takes no sample limit.
_UNSAMPLED = {
    "demo": "evaluates the model source's own test split",
    "task": "evaluates the model source's own test split",
    "python": "is a function of your own, which chooses its data",
    "proxy": "reads a calibration batch, whose size is set by the calibration sample count",
}


@dataclass(frozen=True)
class MetricSpec:
    """A checked metric spec: its kind and its argument (a path, ``MODULE:FUNCTION``, or empty)."""

    kind: str
    argument: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


def check_metric_spec(spec: str | MetricSpec) -> MetricSpec:
    """The spec parsed and checked without the model: its syntax, and that its file, folder or module is
    there. Raises :class:`EvaluationError` naming the spec and the fix."""
    if isinstance(spec, MetricSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise EvaluationError(f"give a metric spec: {METRIC_USAGE}")
    kind, _, argument = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in METRIC_SPECS:
        close = difflib.get_close_matches(kind, list(METRIC_SPECS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise EvaluationError(f"unknown metric spec {spec!r}; {hint}use {METRIC_USAGE}")
    usage = METRIC_SPECS[kind]
    if usage is None and argument:
        raise EvaluationError(f"metric spec {kind} takes no argument; write just {kind}")
    if usage is not None and not argument.strip():
        raise EvaluationError(f"metric spec {spec!r} needs its argument: write {usage}")
    checked = MetricSpec(kind, argument.strip())
    _CHECKS.get(kind, lambda _: None)(checked)
    return checked


def check_samples(spec: str | MetricSpec, samples: int | None, *, option: str = "samples") -> None:
    """Refuse a sample limit the metric cannot take, before anything is loaded: one that is not a whole number of
    1 or more (2 or more for a rank correlation), or one given to a metric that does not read a file or folder.
    ``option`` is how the caller's interface names the limit, for the fix the error gives."""
    if samples is None:
        return
    checked = check_metric_spec(spec)
    if checked.kind not in SAMPLED_KINDS:
        raise EvaluationError(f"{checked} takes no sample limit: it {_UNSAMPLED[checked.kind]}; drop {option}")
    least = STS_LEAST_PAIRS if checked.kind == "sts" else 1
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < least:
        raise EvaluationError(f"a sample limit of {samples!r} for {checked}: give a whole number of "
                              f"{SAMPLED_KINDS[checked.kind]}, {least} or more")


def _check_file(spec: MetricSpec) -> None:
    path = Path(spec.argument).expanduser()
    if not path.is_file():
        raise EvaluationError(f"{spec}: no such file {path}")
    if not os.access(path, os.R_OK):
        raise EvaluationError(f"{spec}: {path} is not readable; check its permissions")
    if path.stat().st_size == 0:
        raise EvaluationError(f"{spec}: {path} is empty")


def _check_folder(spec: MetricSpec) -> None:
    path = Path(spec.argument).expanduser()
    if not path.is_dir():
        raise EvaluationError(f"{spec}: no such directory {path}")
    if not any(child.is_dir() for child in path.iterdir()):
        raise EvaluationError(f"{spec}: {path} holds no class folders; an ImageFolder has one sub-folder of images per class")


def _check_python(spec: MetricSpec) -> None:
    module, _ = split_spec(spec.argument, str(spec), EvaluationError, "python:mymetrics:accuracy")
    check_module(module, str(spec), EvaluationError)


_CHECKS = {"perplexity": _check_file, "sts": _check_file, "imagefolder": _check_folder, "python": _check_python}


def resolve_calibration(loaded: LoadedModel, source: CalibrationSource | None, *, num_samples: int | None = None,
                        seed: int = 0) -> CalibrationSource | None:
    """A calibration source for ``loaded``: ``"train"`` (or ``None`` when the source knows its training data)
    becomes a seeded sample of its labelled training examples; anything else is returned as it is."""
    if source is None and loaded.training_data is None:
        return None
    if source in (None, "train"):
        if loaded.training_data is None:
            raise EvaluationError(f"calibration 'train': no training data is known for {loaded.spec}; give a text file or english")
        train = loaded.training_data[0]
        return sample_examples(train, num_samples, seed=seed) if isinstance(train, tuple) else train
    return os.path.expanduser(source) if isinstance(source, str) else source


def parse_metric(spec: str | MetricSpec, loaded: LoadedModel, *, calibration: CalibrationSource | None = None,
                 tokenizer: Any = None, samples: int | None = None, **proxy_options: Any) -> Metric:
    """The metric ``spec`` names (see the module docstring), for the dense model ``loaded``; ``samples`` limits a
    file or folder metric to that many windows, sentence pairs or images, spread evenly over it.

    ``calibration`` feeds the proxy (any source :func:`secateurs.data.load_calibration` takes; default: a sample
    of the model's training data when known, else its example inputs); ``tokenizer`` overrides the model's for
    text metrics; ``proxy_options`` (``num_samples``, ``seq_len``, ``seed``, ``loss``) shape the proxy.
    """
    checked = check_metric_spec(spec)
    check_samples(checked, samples)
    model, argument = loaded.model, checked.argument
    if checked.kind in ("demo", "task"):
        return TaskMetric(loaded)
    if checked.kind == "perplexity":
        return perplexity_metric(model, argument, tokenizer=tokenizer, samples=samples)
    if checked.kind == "sts":
        return sts_metric(model, argument, tokenizer=tokenizer, samples=samples)
    if checked.kind == "imagefolder":
        channels, height, width = _image_shape(loaded, checked)
        return imagefolder_metric(argument, (height, width), channels=channels, samples=samples)
    if checked.kind == "python":
        return _python_metric(checked)
    source = resolve_calibration(loaded, calibration, num_samples=proxy_options.pop("num_samples", None),
                                 seed=proxy_options.get("seed", 0))
    return proxy_metric(model, source, example_inputs=loaded.example_inputs, tokenizer=tokenizer, **proxy_options)


def _image_shape(loaded: LoadedModel, spec: MetricSpec) -> tuple[int, int, int]:
    """(channels, height, width) of the images the model takes, from its example input."""
    inputs = loaded.example_inputs
    first = inputs.get("pixel_values") if isinstance(inputs, Mapping) else (inputs[0] if inputs else None)
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise EvaluationError(f"{spec} needs a model taking images N,C,H,W; {loaded.spec} takes {shape}")
    _, channels, height, width = first.shape
    return channels, height, width


def _python_metric(spec: MetricSpec) -> Metric:
    function, _, _ = user_function(spec.argument, str(spec), EvaluationError, "python:mymetrics:accuracy")
    if isinstance(function, Metric):
        return function
    return FunctionMetric(function, name=function.__name__,
                          higher_is_better=bool(getattr(function, "higher_is_better", True)))