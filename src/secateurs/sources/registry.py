"""The source registry: each spec prefix (``torchvision``, ``demo``...) names one loader."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from secateurs.errors import ModelSpecError
from secateurs.sources.model import LoadedModel, Shape

#: ``loader(argument, input_shape, weights) -> LoadedModel``; ``weights=False`` may skip loading or
#: training weights when only the architecture is needed (rebuilding a saved model).
Loader = Callable[[str, "Shape | None", bool], LoadedModel]
#: ``portable(argument) -> files``: the local files that rebuild the architecture (config, tokenizer), copied
#: beside a saved model so that it stays loadable when the source moves; the copies' folder replaces ``argument``.
Portable = Callable[[str], list[Path]]


@dataclass(frozen=True)
class Source:
    """One spec prefix: its loader, how to write it (``usage``) and what it loads (``summary``)."""

    prefix: str
    loader: Loader
    usage: str
    summary: str
    takes_argument: bool = True
    portable: Portable | None = None


_SOURCES: dict[str, Source] = {}


def register_source(prefix: str, usage: str, summary: str, takes_argument: bool = True,
                    portable: Portable | None = None) -> Callable[[Loader], Loader]:
    """Decorator: make ``PREFIX:ARG`` (or the bare word ``PREFIX``) load through the decorated loader;
    ``portable`` lists the files to copy beside saved models (sources that read a local directory)."""

    def decorate(loader: Loader) -> Loader:
        _SOURCES[prefix] = Source(prefix, loader, usage, summary, takes_argument, portable)
        return loader

    return decorate


def available_sources() -> list[Source]:
    return list(_SOURCES.values())


def _unknown_spec(spec: str, prefix: str) -> ModelSpecError:
    """Why ``spec`` names no source: a directory that is not a saved model, or a prefix nobody registered."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSpecError(f"{spec} looks like a Hugging Face model directory; write hf:{spec}")
        return ModelSpecError(f"{spec} is a directory but not one written by secateurs prune (no manifest.json)")
    usages = ", ".join(s.usage for s in _SOURCES.values())
    close = difflib.get_close_matches(prefix, list(_SOURCES), n=1, cutoff=0.5)
    hint = f"did you mean {_SOURCES[close[0]].usage}? " if close else ""
    return ModelSpecError(
        f"unknown model spec {spec!r}; {hint}use one of: {usages}, or a directory written by secateurs prune"
    )


def resolve(spec: str) -> tuple[Source, str]:
    """The source ``spec`` names and its argument (``torchvision:resnet18`` -> torchvision, ``resnet18``)."""
    prefix, _, argument = spec.partition(":")
    source = _SOURCES.get(prefix.strip().lower())
    if source is None:
        raise _unknown_spec(spec, prefix)
    if source.takes_argument and not argument:
        raise ModelSpecError(f"{spec!r} needs an argument: {source.usage}")
    return source, argument.strip()


def build(spec: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    """The model a registered source makes of ``spec``, in eval mode; random init is the same on every run
    and the caller's random generator is left untouched."""
    source, argument = resolve(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loaded = source.loader(argument, input_shape, weights)
    loaded.model.eval()
    return loaded


def portable_files(spec: str) -> dict[str, Path]:
    """The files a saved model of ``spec`` should carry to be rebuilt without the source (name -> path)."""
    source, argument = resolve(spec)
    if source.portable is None:
        return {}
    return {path.name: path for path in source.portable(argument)}


def relocated(spec: str, folder: Path) -> str:
    """``spec`` pointing at the copies of its portable files in ``folder``."""
    source, _ = resolve(spec)
    return f"{source.prefix}:{folder}"
