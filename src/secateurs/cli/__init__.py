"""The ``secateurs`` command line: one module per command, shared option groups, output formatting.

Extension points: :func:`register_command` (a new subcommand), :func:`prune_options` (an option group of
``secateurs prune``) and :func:`add_prune_step` (a step of its pipeline, sharing a :class:`PruneRun`).
"""

from secateurs.cli.app import main, register_command
from secateurs.cli.command import Command
from secateurs.cli.prune import prune_options
from secateurs.cli.steps import PruneRun, Step, add_prune_step

__all__ = ["Command", "PruneRun", "Step", "add_prune_step", "main", "prune_options", "register_command"]
