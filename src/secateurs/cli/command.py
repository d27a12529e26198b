"""What a subcommand is made of: a parser that reports bad usage as one line, and a handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from secateurs.errors import SecateursError


class UsageError(SecateursError, ValueError):
    """A command line that cannot work as written."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as one line (raised, so ``main`` prints it and exits 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Command:
    """A ``secateurs`` subcommand: ``add_arguments`` fills its parser, ``run`` gets the parsed
    arguments and returns the exit code."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str = ""
