"""The ``secateurs`` command: its parser, the registry of subcommands, and how errors become exit codes.

Exit codes: 0 success, 2 bad usage (bad option, unknown model spec, input shape that does not fit,
output directory that exists), 1 failure (missing package, failed write, anything else). Errors are
one line on stderr; ``--debug`` adds the traceback.

A new subcommand is a :class:`~secateurs.cli.command.Command` added with :func:`register_command`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from secateurs.cli import (
    bench,
    demo,
    export,
    prune,
    report,
    run,
    sensitivity,
    study,
    summary,
)
from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_debug_option
from secateurs.cli.wording import in_cli_words
from secateurs.errors import ModelSpecError, PruningError, SecateursError
from secateurs.recipes import OptionError, RecipeError
from secateurs.storage import OutputExistsError
from secateurs.version import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Errors that mean "the command line is wrong" (exit 2); every other error is a failure (exit 1).
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, OptionError, RecipeError, ModelSpecError, PruningError, OutputExistsError,
)  # fmt: skip

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        prune.COMMAND, summary.COMMAND, demo.COMMAND, sensitivity.COMMAND, study.COMMAND, report.COMMAND,
        export.COMMAND, bench.COMMAND, run.COMMAND,
    )  # fmt: skip
}


def register_command(command: Command) -> None:
    """Add a subcommand (or replace one of the same name)."""
    COMMANDS[command.name] = command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="secateurs",
        description="Prune PyTorch networks and measure what it buys.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    add_debug_option(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        add_debug_option(sub)
        sub.set_defaults(handler=command.run, parser=sub)
    return parser


def _offline_environment(debug: bool) -> None:
    """Nothing is ever downloaded, and (unless debugging) third-party chatter stays out of the output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _error(message: str, code: int) -> int:
    print(f"secateurs: error: {message}", file=sys.stderr)
    return code


def _report_error(exc: BaseException, debug: bool, parser: argparse.ArgumentParser | None = None) -> int:
    """One line on stderr (after the traceback with --debug), naming the subcommand's options where the
    library named parameters; returns the exit code."""
    if debug:
        traceback.print_exc()
    code = EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE
    known = isinstance(exc, (SecateursError, OSError))
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
        message += f": {exc.filename}"
    message = in_cli_words(" ".join(message.split()), parser) or type(exc).__name__
    if not known and not debug:
        message += " (run with --debug for the traceback)"
    return _error(message, code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secateurs`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _offline_environment(debug)
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.handler(args)
    except KeyboardInterrupt:
        return _error("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line (or a traceback with --debug)
        return _report_error(exc, debug, getattr(args, "parser", None))
