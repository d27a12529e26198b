"""``secateurs sensitivity``: prune one unit at a time at a range of amounts, evaluate, write the curves.

Everything that can be checked without the model (the metric spec and its files, amounts against the
granularity, method against calibration, the output directory) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from secateurs.analysis import SensitivityResult
from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_options
from secateurs.cli.output import print_json
from secateurs.recipes.commands import check_sensitivity_request, scan_sensitivity
from secateurs.recipes.options import SENSITIVITY_FILES, SENSITIVITY_GROUPS
from secateurs.recipes.progress import say
from secateurs.sources import load_model


def add_sensitivity_arguments(parser: ArgumentParser) -> None:
    add_options(parser, SENSITIVITY_GROUPS)


# ---- checks before the model loads ---------------------------------------------------------------


def check_request(args: argparse.Namespace) -> None:
    """Refuse contradictory options and unwritable output before loading anything."""
    check_sensitivity_request(args)
    if args.out is not None:
        _check_out(args.out, args.overwrite)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another path")
    existing = [name for name in SENSITIVITY_FILES.values() if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not _writable(parent):
        raise UsageError(f"--out {out}: cannot write in {parent} (permission denied); choose another directory")


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


# ---- the command ---------------------------------------------------------------------------------


def _write(result: SensitivityResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / SENSITIVITY_FILES["json"])
    result.to_csv(out / SENSITIVITY_FILES["csv"])
    return [out / SENSITIVITY_FILES["json"], out / SENSITIVITY_FILES["csv"], result.plot(out / SENSITIVITY_FILES["plot"])]


def run_sensitivity(args: argparse.Namespace) -> int:
    check_request(args)
    if not args.quiet:
        say(f"loading {args.model}")
    loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    result = scan_sensitivity(loaded, args)
    written = _write(result, args.out) if args.out is not None else []
    if args.json:
        print_json(result.to_dict())
        return 0
    print(result.summary())
    print(result.table(args.top))
    for note in result.notes:
        print(note)
    if written:
        print("wrote " + ", ".join(str(path) for path in written))
    return 0


COMMAND = Command(
    "sensitivity",
    "prune one layer, group, head or block at a time and chart how the metric falls",
    "Prune each unit of MODEL alone at each amount, evaluate the metric (--eval), and report the units from most "
    "to least fragile; with --out, write the curves as JSON and CSV and plot them (one line per unit).",
    add_sensitivity_arguments,
    run_sensitivity,
    epilog=(
        "examples:\n"
        "  secateurs sensitivity demo --eval demo --amounts 0.1:0.9:0.1 --out sens-demo\n"
        "  secateurs sensitivity demo --eval proxy --granularity channel --amounts 0.25,0.5,0.75\n"
        "  secateurs sensitivity hf:./gpt2 --eval perplexity:notes.txt --granularity head --amounts 0.25,0.5\n"
        "  secateurs sensitivity minilm --eval sts:sts-dev.csv --method wanda --calibration english --units '*.0.*'"
    ),
)
