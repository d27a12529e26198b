"""``secateurs prune``: its options (:data:`secateurs.recipes.options.PRUNE_GROUPS`) and the command that runs the
prune pipeline (:mod:`secateurs.recipes.prune_pipeline`), shared with recipes.

A feature adds an option group with :func:`prune_options` and a step with
:func:`~secateurs.recipes.prune_pipeline.add_prune_step`, without editing the others.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable

from secateurs.cli.command import ArgumentParser, Command
from secateurs.cli.options import add_options
from secateurs.cli.output import print_json
from secateurs.cli.prune_report import format_prune_result
from secateurs.recipes.options import PRUNE_GROUPS
from secateurs.recipes.prune_pipeline import PruneRun, run_steps
from secateurs.recipes.prune_result import prune_result

PRUNE_OPTION_GROUPS: list[Callable[[ArgumentParser], None]] = []


def prune_options(add: Callable[[ArgumentParser], None]) -> Callable[[ArgumentParser], None]:
    """Register a function that adds an option group to ``secateurs prune``."""
    PRUNE_OPTION_GROUPS.append(add)
    return add


@prune_options
def _defined_options(parser: ArgumentParser) -> None:
    add_options(parser, PRUNE_GROUPS)


def add_prune_arguments(parser: ArgumentParser) -> None:
    for add in PRUNE_OPTION_GROUPS:
        add(parser)


def run_prune(args: argparse.Namespace) -> int:
    run = PruneRun(args, command=shlex.join(["secateurs", *args.argv]))
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
        "  secateurs prune hf:llama-7b --stream --method wanda --amount 0.5 --calibration english --out llama-7b-50\n"
        "  secateurs prune demo --method l2 --granularity channel --scope global --no-normalize-scores --amount 0.3"
    ),
)
