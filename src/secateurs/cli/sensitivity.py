"""``secateurs sensitivity``: prune one unit at a time at a range of amounts, evaluate, write the curves.

Everything that can be checked without the model (the metric spec and its files, amounts against the
granularity, method against calibration, the output directory) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from secateurs.analysis import (
    STRUCTURAL_GRANULARITIES,
    EvaluationError,
    SensitivityResult,
    parse_metric,
    resolve_calibration,
    sensitivity,
)
from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import (
    add_eval_option,
    add_json_option,
    add_model_argument,
    granularity_arg,
    positive_int,
)
from secateurs.cli.output import interactive, print_json, say
from secateurs.cli.prune import method_names
from secateurs.core.patterns import NM, parse_pattern
from secateurs.data import available_methods, check_calibration_source
from secateurs.errors import PruningError
from secateurs.sources import load_model

FILES = {"json": "sensitivity.json", "csv": "sensitivity.csv", "plot": "sensitivity.png"}


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


def add_sensitivity_arguments(parser: ArgumentParser) -> None:
    add_model_argument(parser)
    group = parser.add_argument_group("scan")
    add_eval_option(group)
    group.add_argument(
        "--granularity", type=granularity_arg, default="unstructured", metavar="G",
        help="what a unit loses: unstructured (weights of one parameter), N:M (e.g. 2:4), channel (one coupled "
        "channel group), head (one attention block's heads) or layer (one residual block, removed) (default %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--amounts", type=amounts_arg, metavar="A", help="fractions of each unit to prune: 0.1:0.9:0.1 "
        "(start:stop:step) or 0.25,0.5 (default 0.1:0.9:0.1; below 1 for channel and head; not with N:M or layer)",
    )  # fmt: skip
    group.add_argument(
        "--method", choices=method_names(), metavar="METHOD",
        help="importance criterion choosing what each unit loses: %(choices)s (default magnitude)",
    )  # fmt: skip
    group.add_argument(
        "--units", nargs="+", action="extend", metavar="GLOB",
        help="scan only the units matching these globs (or re:REGEX), by unit or module name (default: all)",
    )  # fmt: skip
    group.add_argument("--seed", type=int, help="seed for --method random and for sampling calibration data")
    group.add_argument("--no-reuse", dest="reuse", action="store_false", default=None,
                       help="always run the whole model (by default a proxy scan of a transformer skips the blocks "
                       "before the one perturbed)")
    data = parser.add_argument_group("calibration data (data-aware --method, and --eval proxy)")
    data.add_argument(
        "--calibration", metavar="SOURCE",
        help="a text file, english, sts:FILE, csv:FILE:COLUMN, images:DIR..., or train (the model's own training "
        "data, e.g. the demo's); the proxy's default is train where known, else the example input",
    )  # fmt: skip
    data.add_argument("--calibration-samples", type=positive_int, metavar="N", help="number of calibration samples")
    _add_output_options(parser)


def _add_output_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out", type=Path, metavar="DIR",
        help=f"write {', '.join(FILES.values())} into DIR (created if needed; each file written atomically)",
    )  # fmt: skip
    group.add_argument("--overwrite", action="store_true", help="replace sensitivity files already in DIR")
    group.add_argument("--top", type=positive_int, default=10, metavar="K", help="units in the printed table (default %(default)s)")
    add_json_option(group, "the whole result (every curve)")
    group.add_argument("--quiet", action="store_true", help="no progress bar or progress lines (for logs and CI)")


# ---- checks before the model loads ---------------------------------------------------------------


def check_request(args: argparse.Namespace) -> None:
    """Refuse contradictory options and unwritable output before loading anything."""
    _check_amounts(args)
    _check_method(args)
    if args.out is not None:
        _check_out(args.out, args.overwrite)


def _check_amounts(args: argparse.Namespace) -> None:
    granularity = args.granularity
    pattern = None if granularity in STRUCTURAL_GRANULARITIES else parse_pattern(granularity)
    fixed = f"fixes the sparsity at {1 - pattern.n / pattern.m:.0%}" if isinstance(pattern, NM) else None
    if granularity == "layer":
        fixed = "removes each block whole"
    if fixed and args.amounts is not None:
        raise UsageError(f"--granularity {granularity} {fixed}; drop --amounts")
    if granularity in ("channel", "head") and args.amounts and max(args.amounts) >= 1.0:
        raise UsageError(f"--granularity {granularity} keeps at least one unit of each group: give --amounts below 1")


def _check_method(args: argparse.Namespace) -> None:
    data_aware = args.method in available_methods()
    if args.granularity == "layer" and args.method is not None:
        raise UsageError("--granularity layer removes whole blocks; no --method ranks inside them: drop --method")
    if data_aware and args.calibration is None:
        raise UsageError(f"--method {args.method} reads calibration data: add --calibration english, a text file, or train")
    if args.calibration is not None and not data_aware and args.metric.kind != "proxy":
        raise UsageError("--calibration feeds a data-aware --method or --eval proxy; drop it, or use one of those")
    if args.calibration not in (None, "train"):
        try:
            check_calibration_source(args.calibration)
        except PruningError as exc:
            raise UsageError(f"--calibration: {exc}") from None


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another path")
    existing = [name for name in FILES.values() if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"--out {out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not _writable(parent):
        raise UsageError(f"--out {out}: cannot write in {parent} (permission denied); choose another directory")


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


# ---- the command ---------------------------------------------------------------------------------


def _scan(args: argparse.Namespace) -> SensitivityResult:
    progress = not args.quiet and interactive()
    if not args.quiet:
        say(f"loading {args.model}")
    loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    seed = {} if args.seed is None else {"seed": args.seed}
    calibration = None
    if args.calibration is not None:
        calibration = resolve_calibration(loaded, args.calibration, num_samples=args.calibration_samples, **seed)
    try:
        metric = parse_metric(args.metric, loaded, calibration=calibration, num_samples=args.calibration_samples,
                              **seed)
    except EvaluationError as exc:
        raise UsageError(f"--eval {args.metric}: {exc}") from None
    options: dict[str, Any] = {"seed": args.seed} if args.seed is not None and args.method == "random" else {}
    return sensitivity(
        loaded.model, metric, granularity=args.granularity, amounts=args.amounts, method=args.method,
        calibration=calibration, example_inputs=loaded.example_inputs, units=args.units,
        reuse_activations=args.reuse, progress=progress, **options,
    )  # fmt: skip


def _write(result: SensitivityResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / FILES["json"])
    result.to_csv(out / FILES["csv"])
    return [out / FILES["json"], out / FILES["csv"], result.plot(out / FILES["plot"])]


def run_sensitivity(args: argparse.Namespace) -> int:
    check_request(args)
    result = _scan(args)
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
