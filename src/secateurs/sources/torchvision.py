"""``torchvision:NAME``: a torchvision classification model, random init (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

from secateurs.errors import ModelSpecError
from secateurs.sources.common import require, unknown_name
from secateurs.sources.model import LoadedModel, Shape, random_input
from secateurs.sources.registry import register_source

#: Models that need another input size than 224x224.
_SIZES = {"inception_v3": 299}
#: Models whose builders warn about a slow legacy init unless told which one to use.
_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"init_weights": False},
    "googlenet": {"init_weights": False},
}


@register_source(
    "torchvision", "torchvision:NAME", "torchvision classification model, random init, e.g. torchvision:resnet18"
)
def load_torchvision(name: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    torchvision = require("torchvision", f"torchvision:{name}", "torchvision", "vision")
    classification = torchvision.models.list_models(module=torchvision.models)
    if name not in classification:
        if name in torchvision.models.list_models():
            raise ModelSpecError(
                f"torchvision:{name} is not a classification model; torchvision: loads classification models "
                "(wrap others in a factory and use python:MODULE:FACTORY)"
            )
        raise unknown_name("torchvision model", name, classification, "see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None, **_KWARGS.get(name, {}))
    size = _SIZES.get(name, 224)
    shape = input_shape or (1, 3, size, size)
    return LoadedModel(model, (random_input(shape),), f"torchvision:{name}", "image-classification", shape)
