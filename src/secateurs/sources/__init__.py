"""Where models come from: ``load_model(spec)``, one loader per source, and saved model directories."""

from secateurs.errors import InputShapeError, MissingDependencyError, ModelSpecError
from secateurs.sources.loading import (
    LoadedModel,
    available_sources,
    load_model,
    load_pruned,
    parse_input_shape,
    register_source,
)

__all__ = [
    "InputShapeError",
    "LoadedModel",
    "MissingDependencyError",
    "ModelSpecError",
    "available_sources",
    "load_model",
    "load_pruned",
    "parse_input_shape",
    "register_source",
]
