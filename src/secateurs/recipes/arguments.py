"""Value parsers shared by the command line and recipes: text in, checked value out.

Each raises :class:`argparse.ArgumentTypeError` with the message a person reads, whether the value came from
``--amount 1.5`` or from ``amount: 1.5`` in a recipe (recipes feed them ``str(value)``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from secateurs.analysis import (
    EvaluationError,
    MetricSpec,
    Target,
    check_metric_spec,
    parse_method,
    parse_target,
)
from secateurs.core.amounts import check_amount
from secateurs.core.criteria import available_criteria
from secateurs.core.patterns import parse_pattern
from secateurs.data import available_methods
from secateurs.errors import ModelSpecError, PruningError
from secateurs.export import available_formats
from secateurs.sources import parse_input_shape

#: Granularities that name whole units, which only physical removal (``--shrink``) takes.
UNIT_GRANULARITIES = ("head", "layer")

#: Criteria that need Python objects (a function, precomputed scores, measured block influences), not a name.
PYTHON_ONLY_CRITERIA = ("custom", "scores", "block_influence", "influence")

#: The shortest --seq-len: room for special tokens and some text.
MIN_SEQ_LEN = 8


def method_names() -> list[str]:
    """The criteria --method takes: the data-free ones by name, then the data-aware methods."""
    data_methods = available_methods()
    hidden = {*PYTHON_ONLY_CRITERIA, *data_methods}
    return [name for name in available_criteria() if name not in hidden] + data_methods


def amount_arg(text: str) -> float | int:
    """``0.5`` or ``50%`` (a fraction of weights or groups) or ``1000`` (a count)."""
    value: float | int
    try:
        if text.strip().endswith("%"):
            value = float(text.strip()[:-1]) / 100
        elif any(ch in text for ch in ".eE"):
            value = float(text)
        else:
            value = int(text)
        return check_amount(value)
    except (ValueError, PruningError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount: give a fraction in [0, 1] (0.5 or 50%) or a count (1000)"
        ) from None


def granularity_arg(text: str) -> str:
    """A mask pattern the library parses (unstructured, N:M, channel, in), or a unit --shrink removes."""
    if text in UNIT_GRANULARITIES:
        return text
    try:
        parse_pattern(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def input_shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_input_shape(text)
    except ModelSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_arg(text: str) -> str:
    """A torch device that exists here, refused at parse time rather than after loading the model."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here; use --device cpu")
    return text


def _number_arg(convert: Callable[[str], Any], accept: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, and refuse it unless ``accept`` holds, naming ``what`` was expected."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_float = _number_arg(float, lambda v: v > 0, "a positive number")
positive_int = _number_arg(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number_arg(int, lambda v: v >= 0, "a whole number of epochs (0 or more)")
whole_number = _number_arg(int, lambda v: True, "a whole number")
fraction = _number_arg(float, lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]")


def path_arg(text: str) -> Path:
    return Path(text)


def eval_spec_arg(text: str) -> MetricSpec:
    """An ``--eval`` spec, checked without the model (syntax, files, folders, modules)."""
    try:
        return check_metric_spec(text)
    except EvaluationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seq_len_arg(text: str) -> int:
    value = positive_int(text)
    if value < MIN_SEQ_LEN:
        raise argparse.ArgumentTypeError(f"{text!r} is too short a window; give at least {MIN_SEQ_LEN} tokens")
    return value


def target_arg(text: str) -> Target:
    try:
        return parse_target(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def max_drop_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of metric points, 0 or more (e.g. 1.0)")
    return value


def amounts_arg(text: str) -> list[float]:
    """``0.1:0.9:0.1`` (start:stop:step, stop included) or ``0.25,0.5,0.75``: fractions in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1  # the stop is included despite float rounding
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of amounts: write START:STOP:STEP (0.1:0.9:0.1) or A,B,C (0.25,0.5), fractions in [0, 1]"
        )
    return values


def study_method_arg(text: str) -> str:
    """A study method, CRITERION[:GRANULARITY], checked at parse time."""
    try:
        parse_method(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def format_arg(text: str) -> list[str]:
    """``onnx`` or ``onnx,int8``: names of registered formats, refused at parse time when unknown."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in available_formats()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; use one of: {', '.join(available_formats())}"
        )
    return names
