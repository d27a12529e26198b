"""User code named by ``python:MODULE:FUNCTION``: model factories, calibration sources, metrics.

One importer for all of them: ``MODULE`` is a dotted module (the working directory is searched too, as
``python -m`` would) or a ``.py`` file; failures name the spec they came from. Each caller says which error
type means "this spec is wrong" in its own interface (a model spec, a calibration source, a metric).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from secateurs.errors import FactoryError, MissingDependencyError, SecateursError

SpecError = type[SecateursError]


@contextlib.contextmanager
def working_directory_importable() -> Iterator[None]:
    """Let ``python:MODULE`` find modules in the working directory, for the import only; ``sys.path`` is restored."""
    cwd = str(Path.cwd())
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def is_file_module(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def split_spec(argument: str, spec: str, error: SpecError, example: str) -> tuple[str, str]:
    """``MODULE:FUNCTION`` split at the last colon, or ``error`` showing ``example``."""
    module, _, function = argument.rpartition(":")
    if not module or not function:
        raise error(f"{spec}: write python:MODULE:FUNCTION, e.g. {example}")
    return module, function


def check_module(name: str, spec: str, error: SpecError) -> None:
    """Refuse a module that cannot be found, without importing (running) it."""
    if is_file_module(name):
        if not Path(name).expanduser().is_file():
            raise error(f"{spec}: no such file {name}")
        return
    with working_directory_importable():
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
    if found is None:
        raise error(f"{spec}: cannot find module {name!r} (not on the Python path; run from its directory or give a .py file)")


def import_module(name: str, spec: str, error: SpecError) -> tuple[Any, str]:
    """Import a dotted module or a ``.py`` file; returns it and its canonical name (the file's resolved path)."""
    check_module(name, spec, error)
    if is_file_module(name):
        return _import_file(Path(name).expanduser().resolve(), spec)
    try:
        with working_directory_importable():
            return importlib.import_module(name), name
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(f"{spec}: importing {name!r} needs the package {exc.name!r}, which is not installed") from None
    except Exception as exc:
        raise FactoryError(f"{spec}: importing {name!r} raised {type(exc).__name__}: {exc}") from exc


def _import_file(path: Path, spec: str) -> tuple[Any, str]:
    """Import a ``.py`` file under a name unique to its path."""
    unique = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    module_spec = importlib.util.spec_from_file_location(f"_secateurs_user_{path.stem}_{unique}", path)
    if module_spec is None or module_spec.loader is None:
        raise FactoryError(f"{spec}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    try:
        with working_directory_importable():
            module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_spec.name]
        raise FactoryError(f"{spec}: importing {path} raised {type(exc).__name__}: {exc}") from exc
    return module, str(path)


def user_function(argument: str, spec: str, error: SpecError, example: str) -> tuple[Callable[..., Any], Any, str]:
    """The callable ``python:MODULE:FUNCTION`` names: (function, its module, the canonical ``MODULE:FUNCTION``)."""
    module_name, function_name = split_spec(argument, spec, error, example)
    module, canonical = import_module(module_name, spec, error)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise error(f"{spec}: module {module_name!r} has no callable {function_name!r}")
    return function, module, f"{canonical}:{function_name}"


def call_user(function: Callable[..., Any], spec: str, *args: Any) -> Any:
    """``function(*args)``; an exception in user code becomes a :class:`FactoryError` naming the spec."""
    try:
        with working_directory_importable():
            return function(*args)
    except SecateursError:
        raise
    except Exception as exc:
        name = getattr(function, "__name__", "the function")
        raise FactoryError(f"{spec}: {name}() raised {type(exc).__name__}: {exc}") from exc
