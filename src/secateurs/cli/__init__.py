"""The ``secateurs`` command line: one module per command, shared option groups, output formatting.

Options are defined once in :mod:`secateurs.recipes.options` and the prune pipeline lives in
:mod:`secateurs.recipes.prune_pipeline`, shared with recipes (``secateurs run``). Extension points:
:func:`register_command` (a new subcommand), :func:`prune_options` (an option group of ``secateurs prune``) and
:func:`add_prune_step` (a step of its pipeline, sharing a :class:`PruneRun`).
"""

from secateurs.cli.app import main, register_command
from secateurs.cli.command import Command
from secateurs.cli.prune import prune_options
from secateurs.recipes.prune_pipeline import PruneRun, Step, add_prune_step

__all__ = ["Command", "PruneRun", "Step", "add_prune_step", "main", "prune_options", "register_command"]
