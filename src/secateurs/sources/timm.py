"""``timm:NAME``: a timm model, random init (``pretrained=False``), input size from its data config."""

from __future__ import annotations

from secateurs.sources.common import require, unknown_name
from secateurs.sources.model import LoadedModel, Shape, random_input
from secateurs.sources.registry import register_source


@register_source("timm", "timm:NAME", "timm model, random init, e.g. timm:resnet18; input size from its config")
def load_timm(name: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    timm = require("timm", f"timm:{name}", "timm", "vision")
    if not timm.is_model(name):
        raise unknown_name("timm model", name, timm.list_models(), "see timm.list_models()")
    model = timm.create_model(name, pretrained=False)
    shape = input_shape or (1, *timm.data.resolve_model_data_config(model)["input_size"])
    task = "image-classification" if getattr(model, "num_classes", 0) else "feature-extraction"
    return LoadedModel(model, (random_input(shape),), f"timm:{name}", task, shape)
