"""The layer rule (docs/architecture.md), checked on every test run so that a violation fails CI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "secateurs"
ROOT = SOURCE.parents[1]
#: Internal modules imported on first use because they import an optional third-party package at their top.
OPTIONAL = {"secateurs.recovery.hf"}  # transformers


def test_import_linter_layer_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def _module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), i.e. every import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_circles_between_modules() -> None:
    graph = grimp.build_graph("secateurs", exclude_type_checking_imports=True)
    assert _module_cycles(graph) == []


def _function_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                module = getattr(inner, "module", None) or ""
                if module in OPTIONAL:
                    continue
                if isinstance(inner, ast.ImportFrom) and (inner.level or module.startswith("secateurs")):
                    found.append(f"{path.relative_to(SOURCE)}:{inner.lineno} {inner.module}")
                if isinstance(inner, ast.Import) and any(a.name.startswith("secateurs") for a in inner.names):
                    found.append(f"{path.relative_to(SOURCE)}:{inner.lineno}")
    return found


@pytest.mark.parametrize("path", sorted(SOURCE.rglob("*.py")), ids=lambda p: str(p.relative_to(SOURCE)))
def test_secateurs_modules_are_imported_at_module_level(path: Path) -> None:
    """Function-level imports hide circles; they are kept only for optional third-party packages."""
    assert _function_level_imports(path) == []
