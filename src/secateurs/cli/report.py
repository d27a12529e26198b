"""``secateurs report DIR``: every file of a study's report written again from its ``study.json`` alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from secateurs.analysis import rebuild_report
from secateurs.cli.command import ArgumentParser, Command, UsageError


def add_report_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="a directory written by secateurs study")


def run_report(args: argparse.Namespace) -> int:
    if not (args.directory / "study.json").is_file():
        raise UsageError(f"{args.directory} holds no study.json: give a directory written by secateurs study")
    files = rebuild_report(args.directory)
    print(f"rebuilt {files.html} and {files.markdown} from {files.json}")
    print("also wrote " + ", ".join(str(path) for path in [*files.csv, *files.figures]))
    return 0


COMMAND = Command(
    "report",
    "rebuild a study's HTML report, summary, CSV and figures from its saved numbers",
    "Read DIR/study.json (written by secateurs study) and write the report again: report.html, summary.md, the CSV "
    "files and every figure, redrawn from the numbers.",
    add_report_arguments,
    run_report,
    epilog="example:\n  secateurs report study-demo",
)
