"""``secateurs prune``: its options, and the command that runs its pipeline (:mod:`secateurs.cli.steps`).

A feature adds an option group with :func:`prune_options` and a step with
:func:`~secateurs.cli.steps.add_prune_step`, without editing the others.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from secateurs.analysis import SOURCES, Target, parse_target
from secateurs.cli.command import ArgumentParser, Command
from secateurs.cli.options import (
    add_eval_option,
    add_json_option,
    add_measure_options,
    add_model_argument,
    amount_arg,
    granularity_arg,
    non_negative_int,
    positive_float,
    positive_int,
)
from secateurs.cli.output import print_json
from secateurs.cli.prune_report import format_prune_result, prune_result
from secateurs.cli.steps import PruneRun, run_steps
from secateurs.core.criteria import DEFAULT_CRITERION, available_criteria
from secateurs.data import available_methods
from secateurs.errors import PruningError
from secateurs.recovery import FINETUNE_LR

#: Criteria that need Python objects (a function, precomputed scores, measured block influences), not a name.
PYTHON_ONLY_CRITERIA = ("custom", "scores", "block_influence", "influence")

PRUNE_OPTION_GROUPS: list[Callable[[ArgumentParser], None]] = []


def prune_options(add: Callable[[ArgumentParser], None]) -> Callable[[ArgumentParser], None]:
    """Register a function that adds an option group to ``secateurs prune``."""
    PRUNE_OPTION_GROUPS.append(add)
    return add


def method_names() -> list[str]:
    """The criteria --method takes: the data-free ones by name, then the data-aware methods."""
    data_methods = available_methods()
    hidden = {*PYTHON_ONLY_CRITERIA, *data_methods}
    return [name for name in available_criteria() if name not in hidden] + data_methods


prune_options(add_model_argument)


@prune_options
def _pruning_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("pruning")
    group.add_argument(
        "--method",
        default=DEFAULT_CRITERION,
        choices=method_names(),
        metavar="METHOD",
        help="importance criterion: %(choices)s (default %(default)s)",
    )
    group.add_argument(
        "--norm", type=positive_float, default=2.0, metavar="P", help="order of the norm for --method ln (default 2)"
    )
    group.add_argument(
        "--amount",
        type=amount_arg,
        metavar="AMOUNT",
        help="how much to prune: a fraction (0.5 or 50%%) of the weights or groups of each layer (local) "
        "or of all selected ones (global), or a count; not with N:M",
    )
    group.add_argument(
        "--granularity",
        type=granularity_arg,
        default="unstructured",
        metavar="G",
        help="unstructured, N:M (e.g. 2:4), channel (whole output channels/neurons), in (input channels); "
        "with --shrink also head (attention heads) or layer (whole residual blocks) (default %(default)s)",
    )
    group.add_argument(
        "--scope",
        choices=("local", "global"),
        default="local",
        help="rank within each layer (local) or across all selected layers (global) (default %(default)s)",
    )
    group.add_argument(
        "--normalize-scores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="for --scope global with channels, heads or layers: divide each unit's score by its layer's mean, "
        "so layers of different sizes compare fairly (default: on)",
    )
    _add_selection_options(group)
    group.add_argument("--seed", type=int, help="seed for random criteria (default: torch's global generator)")
    group.add_argument(
        "--allow-no-op",
        dest="allow_noop",
        action="store_true",
        help="accept a request that removes nothing (--amount 0, or an amount that rounds to no unit); "
        "by default that is an error naming the smallest amount that acts",
    )


def _add_selection_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="prune only parameters matching this glob or re:REGEX (repeatable)",
    )
    group.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="never prune parameters matching this glob or re:REGEX (repeatable); with --shrink, module names kept whole",
    )


@prune_options
def _structural_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("physical removal (--shrink)")
    group.add_argument(
        "--shrink",
        action="store_true",
        help="remove the pruned channels, heads or layers for real (--granularity channel, head or layer): "
        "a smaller dense model, checked against the masked one (max_abs_diff)",
    )
    group.add_argument(
        "--prune-normalized",
        action="store_true",
        help="also shrink widths under a normalisation (a transformer's or ConvNeXt's hidden size)",
    )
    group.add_argument("--round-to", type=positive_int, metavar="N", help="keep channel counts multiples of N (e.g. 8)")
    group.add_argument(
        "--scored-by",
        choices=("outputs", "all"),
        help="score a unit by the weights producing it (outputs: filters, rows) or also by those reading it "
        "(all); default: the method's own choice (outputs for magnitude/Ln/random)",
    )


#: The shortest --seq-len: room for special tokens and some text.
MIN_SEQ_LEN = 8


def _seq_len_arg(text: str) -> int:
    value = positive_int(text)
    if value < MIN_SEQ_LEN:
        raise argparse.ArgumentTypeError(f"{text!r} is too short a window; give at least {MIN_SEQ_LEN} tokens")
    return value


@prune_options
def _calibration_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group(f"data-aware pruning (--method {', '.join(available_methods())})")
    group.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="calibration data; best: the task's own data, sts:FILE (STS pairs), csv:FILE:COLUMN, "
        "tsv:FILE:COLUMN, jsonl:FILE:FIELD (several: COL1,COL2), images:DIR, python:MODULE:FUNCTION; else "
        "train (the model's own training inputs, e.g. the demo's digits), a text file, or a built-in text "
        "(english, random)",
    )
    group.add_argument(
        "--calibration-samples",
        type=positive_int,
        metavar="N",
        help="number of calibration samples (default: 128 windows of text, 1024 sentences for sentence "
        "encoders, 256 images or training examples)",
    )
    group.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="directory of a saved Hugging Face tokenizer for text calibration (default: the model's own)",
    )
    group.add_argument(
        "--seq-len",
        type=_seq_len_arg,
        metavar="N",
        help="tokens per calibration window or sentence (default: the model's maximum, at most 2048); "
        "a text shorter than one window is used whole, with a warning",
    )
    group.add_argument(
        "--allocation",
        choices=("uniform", "owl"),
        default="uniform",
        help="sparsity per block: uniform, or owl (less for blocks with more outlier weights) (default %(default)s)",
    )


def _target_arg(text: str) -> Target:
    try:
        return parse_target(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_drop_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of metric points, 0 or more (e.g. 1.0)")
    return value


@prune_options
def _target_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("pruning to a target (instead of --amount; see docs/analysis.md#targets)")
    group.add_argument(
        "--target", type=_target_arg, metavar="KIND=RATIO",
        help="a budget as a ratio of the model as loaded: sparsity, params, macs, size, or latency (with --shrink, "
        "timed here on --threads); each layer's amount is chosen to lose the least, e.g. macs=0.5",
    )  # fmt: skip
    group.add_argument(
        "--max-drop", type=_max_drop_arg, metavar="POINTS",
        help="the most the --eval metric may lose, in its points (1.0: one accuracy point); without --target, "
        "prune as much as that allows; with it, refuse a budget predicted to cost more",
    )  # fmt: skip
    group.add_argument(
        "--allocate-from", choices=SOURCES,
        help="what predicts each layer's loss: sensitivity (a scan of every layer with --eval, default the cheap "
        "proxy metric), proxy (data free: the share of each layer's importance removed) or uniform (one amount "
        "for all: the baseline) (default: sensitivity with --eval or --max-drop, else proxy)",
    )  # fmt: skip
    add_eval_option(group, default=None)


@prune_options
def _recovery_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("recovery (fine-tuning; models with known training data, e.g. demo)")
    group.add_argument(
        "--finetune",
        type=non_negative_int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune for EPOCHS epochs, pruning on --schedule meanwhile; pruned weights stay zero "
        "(default 0: no fine-tuning)",
    )
    group.add_argument(
        "--schedule",
        choices=("oneshot", "iterative", "gradual"),
        default="oneshot",
        help="oneshot: prune, then fine-tune; iterative: prune in up to 5 equal rounds at epoch boundaries; "
        "gradual: cubic schedule (Zhu & Gupta) every few steps; both finish after 60%% of the epochs "
        "(default %(default)s)",
    )
    group.add_argument("--distill", action="store_true", help="add a distillation loss (KL, T=2) from the dense model")
    group.add_argument(
        "--lr",
        type=positive_float,
        default=FINETUNE_LR,
        help="fine-tuning learning rate, AdamW with cosine decay (default %(default)s; see "
        "benchmarks/results/cli_recovery.md)",
    )
    group.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="write resumable checkpoints here (atomically); rerun to resume"
    )


@prune_options
def _measurement_options(parser: ArgumentParser) -> None:
    group = add_measure_options(parser)
    group.add_argument(
        "--no-eval",
        dest="evaluate",
        action="store_false",
        help="skip the task metric of models that have one (e.g. the demo CNN's accuracy)",
    )


@prune_options
def _output_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="save the pruned model to this directory (written atomically); without it nothing is saved",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists (only a directory secateurs wrote)"
    )
    group.add_argument(
        "--format",
        choices=("sparse", "dense", "both"),
        default="sparse",
        help="weights file: sparse (bitmask + nonzeros, small), dense (plain safetensors) or both (default %(default)s)",
    )
    add_json_option(group, "every number of the report, and what was run")
    group.add_argument("--layers", action="store_true", help="also print the per-layer pruning table")


def add_prune_arguments(parser: ArgumentParser) -> None:
    for add in PRUNE_OPTION_GROUPS:
        add(parser)


def run_prune(args: argparse.Namespace) -> int:
    run = PruneRun(args)
    run_steps(run)
    if args.json:
        print_json(prune_result(run))
    else:
        print(format_prune_result(run))
    return 0


COMMAND = Command(
    "prune",
    "prune a model, measure it before and after, save it",
    "Prune MODEL with masks, measure parameters, nonzeros, MACs, latency and size before and after, and save it (--out).",
    add_prune_arguments,
    run_prune,
    epilog=(
        "examples:\n"
        "  secateurs prune torchvision:resnet18 --amount 0.5 --out resnet18-50\n"
        "  secateurs prune demo --method l2 --granularity channel --amount 0.3 --json\n"
        "  secateurs prune minilm --granularity 2:4 --exclude '*attention*' --out minilm-24\n"
        "  secateurs prune resnet18-50 --amount 0.7 --scope global --out resnet18-70\n"
        "  secateurs prune demo --method l2 --granularity channel --scope global --no-normalize-scores --amount 0.3"
    ),
)
