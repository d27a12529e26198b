"""What several loaders share: optional packages, name suggestions, and the token-id input shape."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from typing import Any

from secateurs.errors import InputShapeError, MissingDependencyError, ModelSpecError
from secateurs.sources.model import Shape


def require(module: str, spec: str, pip: str, extra: str) -> Any:
    """Import the optional package ``module`` that ``spec`` needs, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{spec} needs the package {pip!r}, which is not installed ({exc}); "
            f"install it with: pip install {pip}  (or pip install 'secateurs[{extra}]')"
        ) from None


def unknown_name(kind: str, name: str, known: Sequence[str], hint: str) -> ModelSpecError:
    """The error for a name a source does not know, suggesting close matches (else ``hint``)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    suggestion = f"; did you mean {', '.join(close)}?" if close else f"; {hint}"
    return ModelSpecError(f"unknown {kind} {name!r}{suggestion}")


def check_token_shape(model: str, input_shape: Shape | None, example: str) -> None:
    """Refuse an input shape that is not ``BATCH,SEQ_LEN`` for a model that takes token ids."""
    if input_shape is not None and len(input_shape) != 2:
        raise InputShapeError(
            f"{model} takes token ids of shape BATCH,SEQ_LEN (e.g. {example}), got {','.join(map(str, input_shape))}"
        )
