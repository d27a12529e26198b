"""``demo[:DATASET]``: the demo's CNN, trained on a packaged data set (cached), with test accuracy as its metric;
``demo:vit``: the demo ViT (:mod:`secateurs.demo.vit`), trained on the digits the same way."""

from __future__ import annotations

from torch import nn

from secateurs.demo import DEFAULT_DATASET, accuracy, build_model, load_dataset, trained_model
from secateurs.demo.vit import VIT_DATASET, build_vit, trained_vit
from secateurs.sources.model import LoadedModel, Shape, random_input
from secateurs.sources.registry import register_source


@register_source(
    "demo",
    "demo[:DATASET|vit]",
    "the demo CNN, trained on a packaged data set (digits, mnist1d), or the demo ViT (vit), cached",
    takes_argument=False,
)
def load_demo(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    """The demo CNN (spec ``demo:DATASET``) or ViT (``demo:vit``) whose ``evaluate`` returns test accuracy; without
    ``weights``, the untrained architecture. The example input is the first test samples when the shape fits them."""
    vit = argument == "vit"
    dataset = VIT_DATASET if vit else argument or DEFAULT_DATASET
    data = load_dataset(dataset)
    if vit:
        model = trained_vit().model if weights else build_vit(data)
    else:
        model = trained_model(dataset).model if weights else build_model(data)
    shape = input_shape or (1, *data.sample_shape)
    fits_data = tuple(shape[1:]) == data.sample_shape and shape[0] <= len(data.y_test)
    example = data.x_test[: shape[0]] if fits_data else random_input(shape)

    def evaluate(candidate: nn.Module) -> dict[str, float]:
        """Test accuracy on the data set's fixed test split."""
        return {"accuracy": accuracy(candidate, data.x_test, data.y_test)}

    return LoadedModel(
        model,
        (example,),
        f"demo:{argument or dataset}",
        "image-classification" if len(data.sample_shape) == 3 else "signal-classification",
        shape,
        evaluate,
        info={"dataset": dataset},
        training_data=((data.x_train, data.y_train), (data.x_test, data.y_test)),
    )
