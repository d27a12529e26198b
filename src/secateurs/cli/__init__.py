"""The ``secateurs`` command line: one module per command, shared option groups, output formatting."""

from secateurs.cli.main import main

__all__ = ["main"]
