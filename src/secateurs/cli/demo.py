"""``secateurs demo``: the packaged experiment (:mod:`secateurs.demo`), its defaults taken from :class:`DemoConfig`."""

from __future__ import annotations

import argparse

from secateurs.cli.command import ArgumentParser, Command
from secateurs.cli.options import add_json_option, add_timing_options
from secateurs.cli.output import print_json
from secateurs.demo import (
    DATASETS,
    DEFAULT_DATASET,
    DemoConfig,
    default_config,
    format_report,
    parse_ratios,
    run_demo,
)
from secateurs.recipes.arguments import positive_int


def add_demo_arguments(parser: ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default=DEFAULT_DATASET,
        help="packaged data set to train on (default %(default)s)",
    )
    parser.add_argument(
        "--ratios",
        default=",".join(f"{r:g}" for r in defaults.ratios),
        metavar="R,R,...",
        help="pruning ratios (default %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.train.epochs,
        help="training epochs of the CNN (default %(default)s; part of the cache key)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the random pruning methods (default %(default)s)"
    )
    parser.add_argument("--retrain", action="store_true", help="train again even when a cached model exists")
    add_timing_options(parser, latency_time=defaults.latency_budget_s)
    parser.add_argument(
        "--compact", action="store_true", help="print the accuracy matrix and the reading, not the full table"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_json_option(parser, "rows, dense model, reading")


def run_demo_command(args: argparse.Namespace) -> int:
    config = default_config(
        dataset=args.dataset,
        ratios=parse_ratios(args.ratios),
        epochs=args.epochs,
        seed=args.seed,
        retrain=args.retrain,
        latency_budget_s=args.latency_time,
        threads=args.threads,
    )
    result = run_demo(config, progress=args.progress)
    if args.json:
        print_json(result.to_dict())
    else:
        print(format_report(result, full=not args.compact))
    return 0


COMMAND = Command(
    "demo",
    "train a small CNN on a packaged data set and prune it 90 ways",
    "The seed articles' experiment offline: random/L1 unstructured and random/L2 structured pruning at ratios 0.1-0.9, "
    "local and global, each evaluated for accuracy, nonzeros, size on disk and latency. The trained CNN is cached "
    "(under $SECATEURS_CACHE, default ~/.cache/secateurs).",
    add_demo_arguments,
    run_demo_command,
    epilog="examples:\n  secateurs demo\n  secateurs demo --dataset mnist1d --compact\n  secateurs demo --ratios 0.5,0.9 --json",
)
