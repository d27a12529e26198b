"""The error of an option that cannot work as given, whichever front end (command line, recipe) gave it."""

from __future__ import annotations

import re

from secateurs.errors import SecateursError

#: ``--calibration-samples``, ``--no-latency``: an option as the command line writes it.
_CLI_OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


class OptionError(SecateursError, ValueError):
    """Options that cannot work (alone or together), refused before any slow work.

    ``key`` is the recipe key of the option to change (``calibration_samples``). The message names options as
    the command line writes them (``--calibration-samples``), which is what ``secateurs prune`` prints;
    :func:`in_recipe_words` rewrites them as recipe keys.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def in_recipe_words(message: str, keys: dict[str, str] | None = None) -> str:
    """``message`` with each ``--option`` written as its recipe key: ``keys`` maps option spellings that are not
    the key with dashes (``--no-eval`` -> ``evaluate: false``); any other ``--a-b`` becomes ``a_b``."""
    table = keys or {}

    def replace(match: re.Match[str]) -> str:
        return table.get(match.group(0)) or match.group(1).replace("-", "_")

    return _CLI_OPTION.sub(replace, message)
