"""argparse parsers built from the option records of :mod:`secateurs.recipes.options`, and the CLI-only options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from secateurs.cli.command import ArgumentParser
from secateurs.recipes.options import Option, OptionGroup, timing_options


def _argument(option: Option) -> tuple[list[str], dict[str, Any]]:
    """The names and keyword arguments of ``add_argument`` for one option."""
    if option.kind == "positional":
        extra = {"type": option.parse} if option.parse else {}
        return [option.key], {"metavar": option.metavar, "nargs": option.nargs, "help": option.help, **extra}
    kwargs: dict[str, Any] = {"dest": option.attribute, "help": option.help}
    if option.kind == "flag":
        kwargs.update(action="store_true")
    elif option.kind == "off":
        kwargs.update(action="store_false", **({} if option.default is True else {"default": option.default}))
    elif option.kind == "unset":
        kwargs.update(action="store_const", const=None)
    elif option.kind == "toggle":
        kwargs.update(action=argparse.BooleanOptionalAction, default=option.default)
    else:
        kwargs.update(default=option.default, metavar=option.metavar, required=option.required or None)
        kwargs.update({name: value for name in ("choices",) if (value := option.choices) is not None})
        if option.parse is not None:
            kwargs["type"] = option.parse
        if option.kind == "append":
            kwargs["action"] = "append"
        elif option.kind == "nargs":  # repeated lists add up; a list with a default replaces it
            kwargs.update(nargs="+", **({"action": "extend"} if option.default is None else {}))
    return [option.cli], {key: value for key, value in kwargs.items() if value is not None or key == "default"}


def add_options(parser: ArgumentParser, groups: Sequence[OptionGroup]) -> None:
    """Add every option of ``groups`` to ``parser``, one argparse group per title."""
    containers: dict[str | None, argparse._ActionsContainer] = {}
    for group in groups:
        if group.title not in containers:
            containers[group.title] = parser if group.title is None else parser.add_argument_group(group.title)
        for option in group.all:
            names, kwargs = _argument(option)
            containers[group.title].add_argument(*names, **kwargs)


def add_json_option(container: argparse._ActionsContainer, what: str) -> None:
    container.add_argument("--json", action="store_true", help=f"print one JSON object instead of the human-readable report: {what}")


def add_timing_options(container: argparse._ActionsContainer, *, latency_time: float) -> None:
    """--latency-time and --threads, for commands not built from option records (``secateurs demo``)."""
    for option in timing_options(latency_time):
        names, kwargs = _argument(option)
        container.add_argument(*names, **kwargs)


def add_debug_option(parser: ArgumentParser) -> None:
    """--debug, accepted before and after the command name."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )
