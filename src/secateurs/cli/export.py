"""``secateurs export``: a pruned model written in formats that load without secateurs (:mod:`secateurs.export`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_json_option, input_shape_arg
from secateurs.cli.output import human_bytes, print_json, say
from secateurs.export import (
    ExportFormat,
    ExportReport,
    UnsupportedFormatError,
    available_formats,
    export,
    format_summaries,
    get_format,
)
from secateurs.export.formats import Check


def format_arg(text: str) -> list[str]:
    """``onnx`` or ``onnx,int8``: names of registered formats, refused at parse time when unknown."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in available_formats()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; use one of: {', '.join(available_formats())}"
        )
    return names


def add_export_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="a directory written by secateurs prune (or any model spec: demo, minilm, ...)"
    )
    listing = "; ".join(f"{name}: {summary}" for name, summary in format_summaries().items())
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        type=format_arg,
        required=True,
        metavar="FORMAT",
        help=f"output format, repeatable or comma-separated: {listing}",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="export directory (written atomically)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists (only a directory secateurs wrote)"
    )
    parser.add_argument(
        "--input-shape",
        type=input_shape_arg,
        metavar="SHAPE",
        help="shape of the example input the files are traced and checked on (default: the model's)",
    )
    parser.add_argument(
        "--fixed-shapes",
        action="store_true",
        help="trace with the example input's exact shapes (default: batch size and token length free where the "
        "model allows it)",
    )
    add_json_option(parser, "every file, its size, its check and how to load it")


def _formats(args: argparse.Namespace) -> list[ExportFormat]:
    chosen = [get_format(name) for names in args.formats for name in names]
    if args.fixed_shapes:
        chosen = [dataclasses.replace(fmt, dynamic=False) if hasattr(fmt, "dynamic") else fmt for fmt in chosen]
    return chosen


def _check_text(check: Check | None) -> str:
    if check is None:
        return ""
    if check.bound == 0.0 and check.max_abs_diff == 0.0:
        return "bit-identical"
    if check.bound is not None:
        return f"max abs diff {check.max_abs_diff:.2g} (bound {check.bound:.2g})"
    return f"max abs diff {check.max_abs_diff:.2g} ({check.relative:.2%} of the largest output)"


def format_export_report(report: ExportReport, model: str) -> str:
    """The table of what was written, the notes, and the Python that loads each file."""
    lines = [f"exported {model} to {report.path}\n", f"{'format':<14}{'file':<20}{'size':>11}   check"]
    for name, fmt in report.formats.items():
        for index, (path, size) in enumerate(fmt.files.items()):
            label, check = (name, _check_text(fmt.check)) if index == 0 else ("", "")
            shown = f"{path}/" if (report.path / path).is_dir() else path
            lines.append(f"{label:<14}{shown:<20}{human_bytes(size):>11}   {check}".rstrip())
    notes = [f"  {name}: {note}" for name, fmt in report.formats.items() for note in fmt.notes]
    if notes:
        lines += ["", "notes:", *notes]
    lines += ["", f"load without secateurs (paths relative to {report.path}; also in export.json):"]
    for name, fmt in report.formats.items():
        for path, snippet in fmt.load.items():
            if path.endswith(".data"):
                continue
            lines.append(f"  # {name}")
            lines += [f"  {line}" for line in snippet.splitlines()]
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    formats = _formats(args)
    say(f"exporting {args.model} as {', '.join(fmt.name for fmt in formats)}")
    try:
        report = export(args.model, args.out, formats, input_shape=args.input_shape, overwrite=args.overwrite)
    except UnsupportedFormatError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json({"model": args.model, **report.to_dict()})
    else:
        print(format_export_report(report, args.model))
    return 0


COMMAND = Command(
    "export",
    "write a pruned model in formats that load without secateurs (hf, onnx, int8...)",
    "Write MODEL (a directory written by secateurs prune, or any model spec) with its masks folded in, in every "
    "--format, each file checked against the model on its example input, into --out atomically. "
    "DIR/export.json says how to load each file without secateurs.",
    add_export_arguments,
    run_export,
    epilog=(
        "examples:\n"
        "  secateurs export minilm-50 --format hf --format onnx-int8 --out minilm-50-export\n"
        "  secateurs export resnet18-50 --format onnx,torch-export --out resnet18-export\n"
        "  secateurs export demo --format int8 --out demo-int8 --json"
    ),
)
