"""Library errors in the words of the command line.

The library names its Python parameters in messages (``pass overwrite=True``, ``tokenizer=...``). On the
command line the same advice must name options (``--overwrite``, ``--tokenizer PATH``). The mapping is read
from the subcommand's own parser, so an option added there is translated without a table to keep in step.
"""

from __future__ import annotations

import argparse
import re

#: ``name=value`` where value is a Python literal, ``...``, ``[...]`` or a bare word/number.
_PARAMETER = re.compile(r"\b([a-z][a-z0-9_]*)=(\[\.\.\.\]|\.\.\.|'[^']*'|\"[^\"]*\"|[\w.:/-]+)")


def _long_option(action: argparse.Action) -> str | None:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else None


def _options_by_parameter(parser: argparse.ArgumentParser) -> dict[str, dict[str, argparse.Action]]:
    """For each destination, its actions keyed by kind: ``"true"``, ``"false"`` or ``"value"``."""
    table: dict[str, dict[str, argparse.Action]] = {}
    for action in parser._actions:
        if _long_option(action) is None or action.dest in ("help", argparse.SUPPRESS):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            table.setdefault(action.dest, {}).update(true=action, false=action)
        elif isinstance(action, argparse._StoreTrueAction):
            table.setdefault(action.dest, {})["true"] = action
        elif isinstance(action, argparse._StoreFalseAction):
            table.setdefault(action.dest, {})["false"] = action
        else:
            table.setdefault(action.dest, {})["value"] = action
    return table


def _as_option(kinds: dict[str, argparse.Action], value: str) -> str | None:
    if value in ("True", "False"):
        action = kinds.get(value.lower())
        if action is None:
            return None
        if isinstance(action, argparse.BooleanOptionalAction) and value == "False":
            return next(o for o in action.option_strings if o.startswith("--no-"))
        return _long_option(action)
    action = kinds.get("value")
    if action is None:
        return None
    if value in ("...", "[...]"):
        metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
        return f"{_long_option(action)} {metavar}"
    return f"{_long_option(action)} {value.strip(chr(39) + chr(34))}"


def in_cli_words(message: str, parser: argparse.ArgumentParser | None) -> str:
    """``message`` with every ``parameter=value`` that the parser has an option for written as that option."""
    if parser is None:
        return message
    table = _options_by_parameter(parser)

    def replace(match: re.Match[str]) -> str:
        kinds = table.get(match.group(1))
        option = _as_option(kinds, match.group(2)) if kinds else None
        return option or match.group(0)

    return _PARAMETER.sub(replace, message)
