"""Argument types, and the options more than one command shares (one definition each)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from secateurs.analysis import (
    METRIC_USAGE,
    EvaluationError,
    MetricSpec,
    check_metric_spec,
)
from secateurs.cli.command import ArgumentParser
from secateurs.core.amounts import check_amount
from secateurs.core.patterns import parse_pattern
from secateurs.errors import ModelSpecError, PruningError
from secateurs.measure import DEFAULT_BUDGET_S, MIN_ROUNDS
from secateurs.sources import available_sources, parse_input_shape

#: Granularities that name whole units, which only physical removal (``--shrink``) takes.
UNIT_GRANULARITIES = ("head", "layer")


# ---- argument types ------------------------------------------------------------------------------


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


# ---- shared options ------------------------------------------------------------------------------


def add_model_argument(parser: ArgumentParser) -> None:
    """MODEL, and where and on what input it runs."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "model",
        metavar="MODEL",
        help="model spec: "
        + ", ".join(s.usage for s in available_sources())
        + ", or a directory written by secateurs prune",
    )
    group.add_argument(
        "--device",
        type=device_arg,
        default="cpu",
        help="where to run the model: cpu, cuda, cuda:1, mps... (default %(default)s); files are always written from CPU",
    )
    group.add_argument(
        "--input-shape",
        type=input_shape_arg,
        metavar="SHAPE",
        help="shape of the example input, e.g. 1,3,224,224 (images) or 1,128 (token ids); default per model",
    )


def add_timing_options(container: argparse._ActionsContainer, *, latency_time: float) -> None:
    """--latency-time and --threads: how long and on how many threads forward passes are timed."""
    container.add_argument(
        "--latency-time",
        type=positive_float,
        default=latency_time,
        metavar="SECONDS",
        help="seconds of timed forward passes per model, after warm-up, in rounds that alternate between the "
        f"models compared; a model too slow for it gets fewer rounds (at least {MIN_ROUNDS}). The median and the "
        "spread over the rounds are reported (default %(default)s)",
    )
    container.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="intra-op threads while timing (default %(default)s: steady on a shared machine, comparable across "
        "machines; give more to time a multi-core deployment)",
    )


def add_measure_options(parser: ArgumentParser) -> argparse._ArgumentGroup:
    """What :func:`secateurs.measure` is asked for; returns the group, for a command's own additions."""
    group = parser.add_argument_group("measurement")
    group.add_argument(
        "--no-latency",
        dest="latency",
        action="store_false",
        help="skip timing the forward pass (the slowest measurement); secateurs prune then also keeps no copy of "
        "the model as loaded to time the pruned one against",
    )
    add_timing_options(group, latency_time=DEFAULT_BUDGET_S)
    return group


def measure_options(args: argparse.Namespace) -> dict[str, Any]:
    """The timing arguments of :func:`secateurs.measure.measure` and :func:`secateurs.measure.compare_latency`
    that :func:`add_measure_options` asked for (whether to time at all is ``args.latency``)."""
    return {"budget_s": args.latency_time, "threads": args.threads}


def add_json_option(container: argparse._ActionsContainer, what: str) -> None:
    container.add_argument("--json", action="store_true", help=f"print one JSON object instead of the human-readable report: {what}")


def add_debug_option(parser: ArgumentParser) -> None:
    """--debug, accepted before and after the command name."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )


def eval_spec_arg(text: str) -> MetricSpec:
    """An ``--eval`` spec, checked without the model (syntax, files, folders, modules)."""
    try:
        return check_metric_spec(text)
    except EvaluationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_eval_option(container: argparse._ActionsContainer, default: str | None = "proxy") -> None:
    """--eval SPEC: what a model is worth (see :mod:`secateurs.analysis.specs`); for every command that evaluates."""
    container.add_argument(
        "--eval",
        dest="metric",
        type=eval_spec_arg,
        default=None if default is None else check_metric_spec(default),
        metavar="SPEC",
        help=f"the metric: {METRIC_USAGE} (loss, or output distance to the dense model, on a calibration batch: "
        "cheap) (default %(default)s)",
    )
