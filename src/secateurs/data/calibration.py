"""Calibration data: the inputs a model is shown while data-aware criteria measure it.

Whatever the source (the task's own data: an STS, CSV/TSV or JSONL file, a folder of images, a Python
factory; or a text file, a list of strings, a built-in text, token tensors, a DataLoader), it becomes a
:class:`Calibration`: a list of :class:`Batch`, each knowing how to call the model. Source strings and
their files are parsed and checked in :mod:`secateurs.data.sources`. Text is tokenized once and cut
into ``num_samples`` windows of ``seq_len`` tokens at seeded random offsets (the sampling of the Wanda
and SparseGPT papers), each wrapped in the tokenizer's special tokens, so every window is a full-length
sequence without padding; a text shorter than one window becomes one shorter window, with a warning.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from secateurs.data.english import ENGLISH
from secateurs.data.sources import (
    BUILTIN_SOURCES,
    SourceSpec,
    call_factory,
    image_tensors,
    parse_source,
    read_texts,
)
from secateurs.errors import PruningError
from secateurs.runtime import move_to

#: Default sample counts: 128 windows (the papers' count), or 1024 sentences, about the same number of tokens
#: for sentence-length inputs.
DEFAULT_SAMPLES = {"window": 128, "sentence": 1024}
#: Calibration examples drawn from a model's own training data by :func:`sample_examples` (and from an image folder).
DEFAULT_TRAINING_SAMPLES = 256
#: Fewer tokens than this cannot calibrate anything: such a text is refused, not stretched.
MIN_TEXT_TOKENS = 16

CalibrationSource = Any  # str | os.PathLike | Sequence[str] | Tensor | Mapping[str, Tensor] | Iterable | Calibration


class TokenizerNeededError(PruningError):
    """Text calibration for a model whose tokenizer was not found: the Python fix is ``tokenizer=``
    (a tokenizer object or the directory of a saved one), the CLI's ``--tokenizer PATH``."""


@dataclass
class Batch:
    """One calibration batch: how to call the model, which tokens are real, and an optional target."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: ``[batch, seq]`` bool, True for real tokens; statistics skip padding. None: every position counts.
    token_mask: torch.Tensor | None = None
    #: labels for a loss (the ``y`` of an ``(x, y)`` DataLoader), used by gradient criteria.
    target: Any = None

    def run(self, model: nn.Module, **extra: Any) -> Any:
        # Dicts are copied: sentence-transformers writes its outputs into the features dict it is given.
        args = tuple(dict(a) if isinstance(a, dict) else a for a in self.args)
        return model(*args, **self.kwargs, **extra)

    def to(self, device: torch.device | str) -> Batch:
        return replace(
            self,
            args=move_to(self.args, device),
            kwargs=move_to(self.kwargs, device),
            token_mask=None if self.token_mask is None else self.token_mask.to(device),
            target=move_to(self.target, device),
        )

    @property
    def num_samples(self) -> int:
        for value in (*self.args, *self.kwargs.values()):
            if isinstance(value, dict):
                value = next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.shape[0]
        return 1


class Calibration(Sequence[Batch]):
    """A list of batches and a line saying where they came from."""

    def __init__(self, batches: Iterable[Batch], description: str = "") -> None:
        self.batches = list(batches)
        if not self.batches:
            raise PruningError("the calibration set is empty; give at least one batch of inputs")
        self.description = description

    def __getitem__(self, index):  # type: ignore[override]
        return self.batches[index]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    @property
    def num_samples(self) -> int:
        return sum(batch.num_samples for batch in self.batches)

    def __repr__(self) -> str:
        return f"Calibration({self.num_samples} samples in {len(self)} batches: {self.description})"


# ---------------------------------------------------------------------------------------------- models



def is_sentence_transformer(model: nn.Module) -> bool:
    """sentence-transformers models take one dict of features; recognised without importing the library."""
    return any(cls.__name__ == "SentenceTransformer" for cls in type(model).__mro__)


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def model_max_length(model: nn.Module) -> int | None:
    """The longest sequence the model takes, from sentence-transformers or the HF config."""
    limits = []
    if is_sentence_transformer(model) and getattr(model, "max_seq_length", None):
        limits.append(int(model.max_seq_length))
    config = getattr(model, "config", None) or hf_config(model)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits) if limits else None


def hf_config(model: nn.Module) -> Any:
    """The Hugging Face config of the model or of the first submodule that carries one (``None`` if none does)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "model_type"):
            return config
    return None


def resolve_tokenizer(model: nn.Module, tokenizer: Any = None) -> Any:
    """The tokenizer given (an object, or the path of a saved one), the one a sentence-transformers model
    carries, or the one saved beside an HF model; :class:`TokenizerNeededError` when there is none."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(tokenizer)
    if tokenizer is not None:
        return tokenizer
    if getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    config = getattr(model, "config", None)
    path = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    if path:
        try:
            return load_tokenizer(path)
        except PruningError:
            pass
    raise TokenizerNeededError(
        f"text calibration needs a tokenizer and none was found for {type(model).__name__}; pass tokenizer=... "
        "(a tokenizer or the directory of a saved one), or give token tensors / a DataLoader instead of text"
    )


#: Words every real tokenizer of a language model knows something of.
_TOKENIZER_PROBE = "the model and the data"


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A Hugging Face tokenizer saved at ``path``, loaded offline, once it is known to tokenize text (recent
    transformers build an empty tokenizer, turning every word into [UNK], from a directory without one)."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(str(path)), local_files_only=True)
    except Exception as exc:
        raise PruningError(
            f"cannot load a tokenizer from {str(path)!r} ({type(exc).__name__}); give the directory of a saved "
            "Hugging Face tokenizer (tokenizer.json or vocabulary files)"
        ) from exc
    probe = tokenizer(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    if not probe or set(probe) <= {tokenizer.unk_token_id}:
        raise PruningError(
            f"{str(path)!r} holds no usable tokenizer: it turns every word into an unknown token (its vocabulary "
            f"has {len(tokenizer)} entries); give the directory of a saved Hugging Face tokenizer"
        )
    return tokenizer


def features_batch(model: nn.Module | None, features: Mapping[str, torch.Tensor]) -> Batch:
    """A batch calling ``model`` with tokenizer-style features the way that model expects them."""
    features = dict(features)
    mask = features.get("attention_mask")
    token_mask = mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    if model is not None and is_sentence_transformer(model):
        return Batch(args=(features,), token_mask=token_mask)
    kwargs = dict(features)
    if model is not None and _accepts(model, "use_cache"):
        kwargs["use_cache"] = False  # a KV cache would grow every time a block is re-run
    return Batch(kwargs=kwargs, token_mask=token_mask)


# ---------------------------------------------------------------------------------------------- text


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids the tokenizer puts before and after a single sequence ([CLS]/[SEP], <s>, nothing)."""
    probe = "calibration"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def _windows_to_batches(
    model: nn.Module | None, tokenizer: Any, windows: torch.Tensor, batch_size: int, description: str
) -> Calibration:
    prefix, suffix = _special_affixes(tokenizer)
    rows = windows.shape[0]
    ids = torch.cat(
        [
            torch.tensor(prefix, dtype=torch.long).expand(rows, -1),
            windows,
            torch.tensor(suffix, dtype=torch.long).expand(rows, -1),
        ],
        dim=1,
    )
    names = set(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
    batches = []
    for chunk in ids.split(batch_size):
        features = {"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
        if "token_type_ids" in names:
            features["token_type_ids"] = torch.zeros_like(chunk)
        batches.append(features_batch(model, features))
    return Calibration(batches, description)


def _content_length(tokenizer: Any, seq_len: int) -> int:
    prefix, suffix = _special_affixes(tokenizer)
    length = seq_len - len(prefix) - len(suffix)
    if length < 1:
        raise PruningError(f"seq_len={seq_len} leaves no room for text besides special tokens; use a larger seq_len")
    return length


def from_text(
    text: str | Sequence[str],
    tokenizer: Any,
    *,
    model: nn.Module | None = None,
    unit: str = "window",
    num_samples: int = 128,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    description: str = "text",
) -> Calibration:
    """Calibration samples cut from text, drawn with a seeded generator.

    ``unit="window"``: ``num_samples`` windows of ``seq_len`` tokens (special tokens included) at random
    offsets of the tokenized text, the sampling of the Wanda and SparseGPT papers. ``unit="sentence"``:
    ``num_samples`` sentences drawn at random (at least three words; truncated to ``seq_len``), padded
    per batch, for models that embed sentences. A list of strings is joined with blank lines first.
    """
    if not isinstance(text, str):
        text = "\n\n".join(text)
    if not text.strip():
        raise PruningError("the calibration text is empty")
    if unit == "sentence":
        return _sentences(text, tokenizer, model, num_samples, seq_len, batch_size, seed, description)
    if unit != "window":
        raise PruningError(f"unit must be 'window', 'sentence' or 'auto', got {unit!r}")
    stream = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long)
    length = _content_length(tokenizer, seq_len)
    if stream.numel() < length:
        _check_enough_text(stream.numel(), len(text), length, description)
        windows = stream.unsqueeze(0)  # the whole text, once: more copies of it would add no information
    else:
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, stream.numel() - length + 1, (num_samples,), generator=generator)
        windows = torch.stack([stream[s : s + length] for s in starts.tolist()])
    shape = f"{windows.shape[0]} x {seq_len - length + windows.shape[1]} tokens"
    return _windows_to_batches(model, tokenizer, windows, batch_size, f"{shape} of {description}")


def _check_enough_text(tokens: int, characters: int, window: int, description: str) -> None:
    """A text shorter than one window is used whole, with a warning; one under :data:`MIN_TEXT_TOKENS` is refused.
    Both say how much text a full window takes, in tokens and (at this text's rate) characters."""
    per_token = characters / max(tokens, 1)
    full = f"a full window takes {window} tokens, about {round(window * per_token):,} characters of such text"
    if tokens < MIN_TEXT_TOKENS:
        raise PruningError(
            f"the calibration text ({description}) has {tokens} tokens ({characters:,} characters); at least "
            f"{MIN_TEXT_TOKENS} tokens (about {math.ceil((MIN_TEXT_TOKENS - tokens) * per_token):,} more characters) "
            f"are needed, and {full}"
        )
    warnings.warn(
        f"the calibration text ({description}) has {tokens} tokens ({characters:,} characters), fewer than one "
        f"window: calibrating on one window of {tokens} tokens, the whole text; {full}",
        stacklevel=3,
    )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str, min_words: int = 3) -> list[str]:
    """Sentences of a text: paragraphs (blank-line separated) with their lines joined, cut after . ! ?"""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        joined = " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
        sentences += [s.strip() for s in _SENTENCE_END.split(joined) if len(s.split()) >= min_words]
    return sentences


def _sentences(
    text: str, tokenizer: Any, model: nn.Module | None, num_samples: int, seq_len: int, batch_size: int, seed: int,
    description: str,
) -> Calibration:
    sentences = split_sentences(text)
    if not sentences:
        raise PruningError("the calibration text holds no sentence of three words or more")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(sentences), generator=generator)[:num_samples].tolist()
    picked = [sentences[i] for i in order]
    # Batching sentences of similar length wastes little compute on padding (which statistics skip anyway).
    lengths = [len(ids) for ids in tokenizer(picked, truncation=True, max_length=seq_len)["input_ids"]]
    picked = [sentence for _, sentence in sorted(zip(lengths, picked), key=lambda pair: pair[0])]
    batches = []
    for first in range(0, len(picked), batch_size):
        encoded = tokenizer(
            picked[first : first + batch_size], padding=True, truncation=True, max_length=seq_len, return_tensors="pt"
        )
        batches.append(features_batch(model, {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}))
    tokens = sum(int(b.token_mask.sum()) if b.token_mask is not None else 0 for b in batches)
    return Calibration(batches, f"{len(picked)} sentences ({tokens} tokens) of {description}")


def random_tokens(
    tokenizer: Any,
    *,
    model: nn.Module | None = None,
    num_samples: int = 128,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
) -> Calibration:
    """Uniformly random non-special token ids: calibration when no text is at hand."""
    special = set(getattr(tokenizer, "all_special_ids", ()))
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, allowed.numel(), (num_samples, _content_length(tokenizer, seq_len)), generator=generator)
    return _windows_to_batches(model, tokenizer, allowed[picks], batch_size, f"{num_samples} x {seq_len} random tokens")


# ---------------------------------------------------------------------------------------------- tensors


def from_tensors(
    inputs: torch.Tensor | Mapping[str, torch.Tensor], *, model: nn.Module | None = None, batch_size: int = 8
) -> Calibration:
    """Split tensors along their first dimension. For Hugging Face models an integer tensor is taken as
    ``input_ids``; a mapping is passed as keyword features; anything else is the model's positional input."""
    if isinstance(inputs, Mapping):
        keys = list(inputs)
        chunks = zip(*(inputs[k].split(batch_size) for k in keys))
        batches = [features_batch(model, dict(zip(keys, parts))) for parts in chunks]
        return Calibration(batches, f"tensors {keys}")
    if not isinstance(inputs, torch.Tensor):
        raise PruningError(f"expected a tensor or a mapping of tensors, got {type(inputs).__name__}")
    token_ids = not inputs.is_floating_point() and inputs.dim() == 2
    if model is not None and token_ids and (is_sentence_transformer(model) or hasattr(model, "config")):
        batches = [features_batch(model, {"input_ids": c, "attention_mask": torch.ones_like(c)}) for c in inputs.split(batch_size)]
    else:
        batches = [Batch(args=(chunk,)) for chunk in inputs.split(batch_size)]
    return Calibration(batches, f"tensor {tuple(inputs.shape)}")


def from_loader(loader: Iterable[Any], *, model: nn.Module | None = None, num_samples: int | None = None) -> Calibration:
    """Batches from a DataLoader (or any iterable): a tensor is the input, ``(x, y, ...)`` gives input
    ``x`` and target ``y``, a dict is keyword features. Stops once ``num_samples`` samples are in."""
    batches: list[Batch] = []
    seen = 0
    for item in loader:
        if isinstance(item, torch.Tensor):
            batch = Batch(args=(item,))
        elif isinstance(item, Mapping):
            batch = features_batch(model, item)
        elif isinstance(item, (tuple, list)) and item:
            batch = Batch(args=(item[0],), target=item[1] if len(item) > 1 else None)
        else:
            raise PruningError(f"cannot use a loader item of type {type(item).__name__} as model input")
        batches.append(batch)
        seen += batch.num_samples
        if num_samples is not None and seen >= num_samples:
            break
    return Calibration(batches, f"{seen} samples from {type(loader).__name__}")


# ---------------------------------------------------------------------------------------------- dispatch


def load_calibration(
    source: CalibrationSource,
    model: nn.Module | None = None,
    *,
    tokenizer: Any = None,
    num_samples: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    unit: str = "auto",
    input_shape: Sequence[int] | None = None,
) -> Calibration:
    """A :class:`Calibration` from any supported source.

    ``source`` is a source string (:mod:`secateurs.data.sources`: a text file, ``sts:FILE``,
    ``csv:FILE:COLUMN``, ``tsv:FILE:COLUMN``, ``jsonl:FILE:FIELD``, ``images:DIR``,
    ``python:MODULE:FUNCTION``, a built-in ``"english"``/``"random"``), a list of strings, token/input
    tensors (or a dict of them), a DataLoader or other iterable of batches, or a ready
    :class:`Calibration`. The task's own data calibrates best. ``tokenizer`` (an object or a saved
    tokenizer's directory) defaults to the model's own. ``seq_len`` defaults to the model's maximum
    length capped at 2048 (the papers' setting for LLMs). Text is cut into ``unit``s (see
    :func:`from_text`); ``"auto"`` means sentences for sentence-transformers models, which embed
    sentences, and windows for everything else. ``num_samples`` defaults to 128 windows, 1024 sentences
    or 256 images (a DataLoader is read to its end unless given a count). Images are resized to
    ``input_shape`` (``C, H, W``, after an optional batch size) as floats in [0, 1].
    """
    if isinstance(source, Calibration):
        return source
    if isinstance(source, (torch.Tensor, Mapping)):
        return from_tensors(source, model=model, batch_size=batch_size)
    if unit == "auto":
        unit = "sentence" if model is not None and is_sentence_transformer(model) else "window"
    if unit not in DEFAULT_SAMPLES:
        raise PruningError(f"unit must be 'window', 'sentence' or 'auto', got {unit!r}")
    options = {
        "tokenizer": tokenizer, "num_samples": num_samples, "seq_len": seq_len, "batch_size": batch_size,
        "seed": seed, "unit": unit, "input_shape": input_shape,
    }  # fmt: skip
    if isinstance(source, (str, os.PathLike)):
        return _from_spec(parse_source(source), model, options)
    if _is_texts(source):
        return _from_texts(list(source), f"{len(source)} strings", model, options)
    if isinstance(source, Iterable):
        return from_loader(source, model=model, num_samples=num_samples)
    raise PruningError(
        f"cannot calibrate from a {type(source).__name__}; give a source string (a text file, sts:FILE, "
        f"csv:FILE:COLUMN, images:DIR, python:MODULE:FUNCTION, {', '.join(BUILTIN_SOURCES)}), a list of strings, "
        "tensors or a DataLoader"
    )


def _is_texts(source: object) -> bool:
    return isinstance(source, Sequence) and bool(source) and all(isinstance(s, str) for s in source)


def _from_spec(spec: SourceSpec, model: nn.Module | None, options: dict[str, Any]) -> Calibration:
    """The calibration a source string names."""
    if spec.kind == "python":
        calibration = load_calibration(call_factory(spec), model, **options)
        calibration.description = f"{spec}: {calibration.description}"
        return calibration
    if spec.kind == "images":
        return _from_images(spec, model, options)
    if spec.kind == "builtin" and spec.path == "random":
        return random_tokens(
            _text_tokenizer(model, options["tokenizer"]), model=model, num_samples=_samples(options),
            seq_len=_default_seq_len(model, options["seq_len"]), batch_size=options["batch_size"], seed=options["seed"],
        )  # fmt: skip
    if spec.kind == "builtin":
        return _from_texts(ENGLISH, "built-in English", model, options)
    return _from_texts(*read_texts(spec), model, options)


def _samples(options: dict[str, Any]) -> int:
    return options["num_samples"] or DEFAULT_SAMPLES[options["unit"]]


def _from_texts(
    text: str | list[str], description: str, model: nn.Module | None, options: dict[str, Any]
) -> Calibration:
    return from_text(
        text, _text_tokenizer(model, options["tokenizer"]), model=model, unit=options["unit"],
        num_samples=_samples(options), seq_len=_default_seq_len(model, options["seq_len"]),
        batch_size=options["batch_size"], seed=options["seed"], description=description,
    )  # fmt: skip


def _from_images(spec: SourceSpec, model: nn.Module | None, options: dict[str, Any]) -> Calibration:
    """Images as positional inputs, with their class labels (for Taylor's loss) when the folder has classes."""
    count = options["num_samples"] or DEFAULT_TRAINING_SAMPLES
    images, labels = image_tensors(spec.path, options["input_shape"], count, options["seed"])
    tensors = (images,) if labels is None else (images, labels)
    calibration = from_loader(DataLoader(TensorDataset(*tensors), batch_size=options["batch_size"]), model=model)
    classes = "" if labels is None else f" in {labels.unique().numel()} classes"
    calibration.description = f"{len(images)} images{classes} of {tuple(images.shape[1:])} from {spec.path}"
    return calibration


def _text_tokenizer(model: nn.Module | None, tokenizer: Any) -> Any:
    if model is not None or isinstance(tokenizer, (str, os.PathLike)):
        return resolve_tokenizer(model, tokenizer)  # type: ignore[arg-type]
    if tokenizer is None:
        raise TokenizerNeededError("text calibration needs the model or a tokenizer to tokenize it; pass tokenizer=...")
    return tokenizer


def _default_seq_len(model: nn.Module | None, seq_len: int | None) -> int:
    if seq_len is not None:
        if seq_len < 2:
            raise PruningError(f"seq_len must be at least 2, got {seq_len}")
        return seq_len
    limit = model_max_length(model) if model is not None else None
    return min(limit or 2048, 2048)


def sample_examples(
    tensors: tuple[torch.Tensor, ...], num_samples: int | None = None, seed: int = 0, batch_size: int = 32
) -> DataLoader:
    """A seeded random subset (256 examples by default) of a model's training tensors, as calibration
    batches: how a model with known training data (the demo CNN) is calibrated."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(tensors[0]), generator=generator)[: num_samples or DEFAULT_TRAINING_SAMPLES]
    return DataLoader(TensorDataset(*(t[chosen] for t in tensors)), batch_size=batch_size)
