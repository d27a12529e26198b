"""``secateurs summary``: the per-layer sparsity table of a model, optionally with its measurements."""

from __future__ import annotations

import argparse
from typing import Any

from secateurs.cli.command import ArgumentParser, Command
from secateurs.cli.options import add_options
from secateurs.cli.output import format_measurements, print_json
from secateurs.core.summary import Summary, summary
from secateurs.measure import Measurements, measure
from secateurs.recipes.options import SUMMARY_GROUPS, measure_options
from secateurs.recipes.progress import say
from secateurs.sources import LoadedModel, load_model


def add_summary_arguments(parser: ArgumentParser) -> None:
    add_options(parser, SUMMARY_GROUPS)


def _summary_result(
    args: argparse.Namespace, loaded: LoadedModel, table: Summary, measured: Measurements | None
) -> dict[str, Any]:
    """The JSON object ``secateurs summary --json`` prints."""
    payload = {"model": args.model, "source": loaded.spec, "task": loaded.task, **table.to_dict()}
    if loaded.manifest is not None:
        payload["pruning"] = loaded.manifest.pruning
    if measured is not None:
        payload["measurements"] = measured.to_dict()
    return payload


def run_summary(args: argparse.Namespace) -> int:
    say(f"loading {args.model}")
    loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    table = summary(loaded.model)
    measured: Measurements | None = None
    if args.measure:
        measured = measure(loaded.model, loaded.example_inputs, latency=args.latency, **measure_options(args))
    if args.json:
        print_json(_summary_result(args, loaded, table, measured))
        return 0
    print(f"{args.model} ({loaded.task}, source {loaded.spec})\n")
    print(table)
    if measured is not None:
        print(f"\n{format_measurements(measured)}")
    return 0


COMMAND = Command(
    "summary",
    "print the per-layer sparsity table of a model",
    "Per-layer parameters, nonzeros, sparsity and all-zero rows/columns of MODEL (e.g. a directory written by secateurs prune).",
    add_summary_arguments,
    run_summary,
    epilog="examples:\n  secateurs summary resnet18-50\n  secateurs summary torchvision:mobilenet_v3_small --measure --json",
)
