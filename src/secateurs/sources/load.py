"""``load_model(spec)``: a registered source or a saved model directory, checked to run on its example input."""

from __future__ import annotations

from collections.abc import Sequence

from secateurs.errors import InputShapeError, ModelSpecError
from secateurs.sources.model import LoadedModel, parse_input_shape
from secateurs.sources.registry import build, resolve
from secateurs.sources.saved import load_pruned
from secateurs.storage import is_model_directory, read_manifest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_inputs(loaded: LoadedModel) -> None:
    """One forward pass, so that a bad input shape fails here with a message naming it."""
    try:
        loaded.run()
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        shape = ",".join(map(str, loaded.input_shape)) if loaded.input_shape else "the example input"
        raise InputShapeError(
            f"input shape {shape} does not fit {loaded.spec}: {_first_line(exc)}; "
            "give a shape the model accepts with --input-shape"
        ) from None


def check_spec(spec: str, input_shape: str | Sequence[int] | None = None) -> None:
    """Refuse a spec that names no source (or a saved directory with a bad manifest), and a malformed input
    shape, without loading anything: the cheap half of :func:`load_model`, run before slow work."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("give a model spec, e.g. torchvision:resnet18, minilm or demo")
    if input_shape is not None:
        parse_input_shape(input_shape)
    spec = spec.strip()
    if is_model_directory(spec):
        read_manifest(spec)
    else:
        resolve(spec)


def load_model(
    spec: str,
    *,
    input_shape: str | Sequence[int] | None = None,
    weights: bool = True,
    check: bool = True,
) -> LoadedModel:
    """Load the model ``spec`` names (see :mod:`secateurs.sources`), in eval mode, with example inputs.

    ``input_shape`` overrides the default example input; ``weights=False`` builds only the architecture
    where that saves work (no demo training, no pretrained weights); ``check`` runs one forward pass to
    make sure the example input fits.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("give a model spec, e.g. torchvision:resnet18, minilm or demo")
    spec = spec.strip()
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    loaded = load_pruned(spec, input_shape=shape) if is_model_directory(spec) else build(spec, shape, weights)
    if check:
        _check_inputs(loaded)
    return loaded
