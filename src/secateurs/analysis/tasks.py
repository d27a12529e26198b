"""Built-in task metrics: perplexity on a text file, Spearman correlation on an STS file, top-1 on an ImageFolder.

* **Perplexity** (causal language models): the file is tokenized once and cut into consecutive windows of
  ``seq_len`` tokens (default: the model's context, at most 1024); each window predicts its tokens after the
  first, and the perplexity is ``exp`` of the mean cross-entropy over all of them. Lower is better.
* **STS** (sentence encoders): the STS-benchmark layout, tab-separated, gold score in column 5 and the two
  sentences in columns 6 and 7 (1-based); a header line is skipped. Each sentence is embedded as
  sentence-transformers does for mean-pooling models (mean of the token states over the attention mask,
  L2-normalised; a sentence-transformers model's own ``sentence_embedding`` when it gives one), pairs are
  scored by cosine, and the metric is Spearman's rank correlation with the gold scores, x 100.
* **ImageFolder top-1** (image classifiers): torchvision's ``ImageFolder`` layout, one folder per class, with
  class indices in sorted folder order (as the model's must be). Images are resized so that the model's input
  size is the central 87.5% (ImageNet evaluation), centre-cropped to it, and normalised with ImageNet's mean
  and standard deviation for 3-channel models (none for others; ``normalize=`` overrides). Percent.

Each takes ``samples``: read only that many windows, sentence pairs or images, spread evenly over the whole file or
folder (STS files and ImageFolders are ordered by topic or class, so the first N would sample one of them), for
sweeps that evaluate a model many times. The metric's :attr:`~secateurs.analysis.Metric.samples` says how many of how
many it reads.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.analysis.metrics import EvaluationError, Metric, OutputMetric
from secateurs.analysis.proxy import next_token_nll
from secateurs.data import Batch
from secateurs.data.calibration import (
    features_batch,
    model_max_length,
    resolve_tokenizer,
)
from secateurs.errors import PruningError
from secateurs.recovery import top1_accuracy
from secateurs.recovery.distill import logits_of
from secateurs.runtime import call_model, model_device
from secateurs.sources.common import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The fraction of the resized image the centre crop keeps (ImageNet evaluation: 224 of 256).
CROP_RATIO = 0.875
MAX_WINDOW = 1024
MAX_SENTENCE_TOKENS = 512
#: A rank correlation needs two pairs at least.
STS_LEAST_PAIRS = 2


def evenly_spaced(count: int, samples: int | None, least: int = 1) -> list[int]:
    """Indices of ``samples`` of ``count`` items spread evenly from the first on; all of them when ``samples`` is None
    or not smaller than ``count``. A limit below ``least`` is refused."""
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < least):
        raise EvaluationError(f"samples={samples!r}: give a whole number of samples, {least} or more, or None for all")
    if samples is None or samples >= count:
        return list(range(count))
    return [index * count // samples for index in range(samples)]


SomeMetric = TypeVar("SomeMetric", bound=Metric)


def _sampled(metric: SomeMetric, samples: int | None, count: int, what: str) -> SomeMetric:
    if samples is not None and samples < count:
        metric.samples = f"{samples} of {count} {what}"
    return metric


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """The text of ``path``, or an :class:`EvaluationError` saying what ``what`` needs."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise EvaluationError(f"{what}: no such file {file}")
    text = file.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise EvaluationError(f"{what}: {file} is empty")
    return text


def _tokenizer(model: nn.Module, tokenizer: Any, what: str) -> Any:
    try:
        return resolve_tokenizer(model, tokenizer)
    except PruningError:
        raise EvaluationError(
            f"{what} tokenizes text and found no tokenizer for {type(model).__name__}; pass tokenizer=... "
            "(or load the model from a directory that holds one)"
        ) from None


# ---------------------------------------------------------------------------------------------- perplexity


class Perplexity(OutputMetric):
    """``exp`` of the mean next-token cross-entropy over windows of a text."""

    name = "perplexity"
    higher_is_better = False

    def measure(self, index: int, batch: Batch, output: Any) -> tuple[float, int]:
        return next_token_nll(logits_of(output), batch.kwargs["input_ids"], batch.kwargs.get("attention_mask"))

    def combine(self, parts: list[tuple[float, int]]) -> float:
        total, count = (sum(values) for values in zip(*parts))
        mean = total / count
        return math.exp(mean) if mean < 700 else math.inf


def perplexity_metric(model: nn.Module, path: str | os.PathLike[str], *, tokenizer: Any = None,
                      seq_len: int | None = None, batch_size: int = 8, samples: int | None = None) -> Perplexity:
    """Perplexity of a causal language model on the text file ``path``, on ``samples`` windows of it spread over the
    file when given (see the module docstring)."""
    what = f"perplexity on {path}"
    text = read_text_file(path, what)
    ids = torch.tensor(_tokenizer(model, tokenizer, what)(text, add_special_tokens=False, verbose=False)["input_ids"])
    length = seq_len or min(model_max_length(model) or MAX_WINDOW, MAX_WINDOW)
    if length < 2 or ids.numel() < 2:
        raise EvaluationError(f"{what}: {ids.numel()} tokens in windows of {length}; give more text (and seq_len >= 2)")
    whole = ids.numel() // length * length
    windows = list(ids[:whole].view(-1, length))
    if ids.numel() - whole >= 2:
        windows.append(ids[whole:])
    chosen = [windows[index] for index in evenly_spaced(len(windows), samples)]
    full = [window for window in chosen if window.numel() == length]
    chunks = list(torch.stack(full).split(batch_size)) if full else []
    chunks += [window.unsqueeze(0) for window in chosen if window.numel() != length]
    batches = [features_batch(model, {"input_ids": c, "attention_mask": torch.ones_like(c)}) for c in chunks]
    return _sampled(Perplexity(batches), samples, len(windows), f"windows of {length} tokens")


# ---------------------------------------------------------------------------------------------- STS


def read_sts(path: str | os.PathLike[str]) -> tuple[list[str], list[str], torch.Tensor]:
    """(first sentences, second sentences, gold scores) of an STS-benchmark file; a header line is skipped."""
    what = f"STS file {path}"
    left, right, gold = [], [], []
    for number, line in enumerate(read_text_file(path, what).splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 7:
            continue
        try:
            gold.append(float(fields[4]))
        except ValueError:
            if number == 1:
                continue
            raise EvaluationError(f"{path}:{number}: column 5 holds {fields[4]!r}, not a similarity score") from None
        left.append(fields[5])
        right.append(fields[6])
    if len(gold) < STS_LEAST_PAIRS:
        raise EvaluationError(
            f"{what} holds {len(gold)} sentence pairs; STS files are tab-separated with the score in column 5 and "
            "the sentences in columns 6 and 7, and the correlation needs at least 2 pairs"
        )
    return left, right, torch.tensor(gold, dtype=torch.float64)


def sentence_embeddings(output: Any, batch: Batch) -> torch.Tensor:
    """L2-normalised sentence embeddings: the model's own ``sentence_embedding``, else the token states
    averaged over the attention mask (sentence-transformers' mean pooling)."""
    if isinstance(output, dict) and isinstance(output.get("sentence_embedding"), torch.Tensor):
        pooled = output["sentence_embedding"]
    else:
        hidden = getattr(output, "last_hidden_state", None)
        hidden = hidden if isinstance(hidden, torch.Tensor) else logits_of(output)
        mask = batch.token_mask if batch.token_mask is not None else torch.ones(hidden.shape[:2], dtype=torch.bool)
        weights = mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return F.normalize(pooled.float(), dim=-1).cpu()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (scipy); 0 when either side is constant (no ranking to correlate)."""
    stats = require("scipy.stats", "the STS metric", "scipy", "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(stats.spearmanr(a.numpy(), b.numpy()).statistic)
    return 0.0 if math.isnan(value) else value


class STSCorrelation(OutputMetric):
    """Spearman x 100 between gold similarity scores and the cosine of the two sentences' embeddings."""

    name = "spearman"
    unit = "x100"

    def __init__(self, batches: Sequence[Batch], left: list[int], right: list[int], gold: torch.Tensor) -> None:
        super().__init__(batches)
        self.left, self.right, self.gold = left, right, gold

    def measure(self, index: int, batch: Batch, output: Any) -> torch.Tensor:
        return sentence_embeddings(output, batch)

    def combine(self, parts: list[torch.Tensor]) -> float:
        embeddings = torch.cat(parts)
        cosine = (embeddings[self.left] * embeddings[self.right]).sum(-1).double()
        return 100.0 * spearman(cosine, self.gold)


def sts_metric(model: nn.Module, path: str | os.PathLike[str], *, tokenizer: Any = None,
               batch_size: int = 32, samples: int | None = None) -> STSCorrelation:
    """Spearman x 100 of a sentence encoder on the STS file ``path``, on ``samples`` of its sentence pairs spread
    over the file when given (see the module docstring)."""
    left, right, gold = read_sts(path)
    count, chosen = len(gold), evenly_spaced(len(gold), samples, least=STS_LEAST_PAIRS)
    left, right, gold = [left[i] for i in chosen], [right[i] for i in chosen], gold[chosen]
    tokenize = _tokenizer(model, tokenizer, f"STS on {path}")
    unique = sorted(set(left) | set(right), key=lambda s: (len(s), s))  # similar lengths batch with little padding
    position = {sentence: i for i, sentence in enumerate(unique)}
    limit = min(model_max_length(model) or MAX_SENTENCE_TOKENS, MAX_SENTENCE_TOKENS)
    batches = []
    for first in range(0, len(unique), batch_size):
        encoded = tokenize(unique[first : first + batch_size], padding=True, truncation=True, max_length=limit,
                           return_tensors="pt")
        batches.append(features_batch(model, {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}))
    metric = STSCorrelation(batches, [position[s] for s in left], [position[s] for s in right], gold)
    return _sampled(metric, samples, count, "sentence pairs")


# ---------------------------------------------------------------------------------------------- ImageFolder


class ImageFolderTop1(Metric):
    """Top-1 accuracy (percent) on a torchvision ``ImageFolder``."""

    name = "top1"
    unit = "%"

    def __init__(self, dataset: Any, batch_size: int = 64, samples: int | None = None) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.images = torch.utils.data.Subset(dataset, evenly_spaced(len(dataset), samples))
        self.checked_classes = False
        _sampled(self, samples, len(dataset), "images")

    def evaluate(self, model: nn.Module) -> float:
        if not self.checked_classes:
            self._check_classes(model)
        return 100.0 * top1_accuracy(model, self.images, batch_size=self.batch_size)

    def _check_classes(self, model: nn.Module) -> None:
        image, _ = self.dataset[0]
        width = logits_of(call_model(model, image.unsqueeze(0).to(model_device(model)))).shape[-1]
        if width < len(self.dataset.classes):
            raise EvaluationError(
                f"the folder has {len(self.dataset.classes)} classes but the model scores {width}; "
                "give a folder whose sorted class folders match the model's class indices"
            )
        self.checked_classes = True


def imagefolder_metric(path: str | os.PathLike[str], input_size: Sequence[int], *, channels: int = 3,
                       normalize: tuple[Sequence[float], Sequence[float]] | None | str = "imagenet",
                       crop_ratio: float = CROP_RATIO, batch_size: int = 64,
                       samples: int | None = None) -> ImageFolderTop1:
    """Top-1 on the ImageFolder at ``path`` (``samples`` of its images spread over it when given) for a model taking
    ``channels x input_size`` images (see the module docstring). ``normalize``: ``"imagenet"`` (default; for 3
    channels), ``None``, or ``(mean, std)``."""
    transforms = require("torchvision.transforms", "the imagefolder metric", "torchvision", "vision")
    datasets = require("torchvision.datasets", "the imagefolder metric", "torchvision", "vision")
    height, width = input_size
    steps = [transforms.Grayscale(1)] if channels == 1 else []
    steps += [transforms.Resize(round(max(height, width) / crop_ratio)), transforms.CenterCrop((height, width)),
              transforms.ToTensor()]
    if normalize == "imagenet":
        normalize = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else None
    if normalize is not None:
        steps.append(transforms.Normalize(*normalize))
    try:
        dataset = datasets.ImageFolder(str(Path(path).expanduser()), transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as exc:
        raise EvaluationError(f"imagefolder {path}: {exc} (one sub-folder of images per class)") from None
    return ImageFolderTop1(dataset, batch_size, samples)
