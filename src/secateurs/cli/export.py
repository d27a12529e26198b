"""``secateurs export``: a pruned model written in formats that load without secateurs (:mod:`secateurs.export`)."""

from __future__ import annotations

import argparse

from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_options
from secateurs.cli.output import human_bytes, print_json
from secateurs.export import (
    ExportReport,
    UnsupportedFormatError,
    export,
)
from secateurs.export.formats import Check
from secateurs.recipes.commands import export_formats
from secateurs.recipes.options import EXPORT_GROUPS
from secateurs.recipes.progress import say


def add_export_arguments(parser: ArgumentParser) -> None:
    add_options(parser, EXPORT_GROUPS)


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
    formats = export_formats(args)
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
