"""The demo CNN: its architecture, its training (through :func:`secateurs.recovery.fit`) and its cache.

The trained model is cached under :func:`secateurs.storage.cache_dir`, keyed by data set, training
configuration and :data:`_CACHE_VERSION`, so a second run skips training.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.demo.datasets import DEFAULT_DATASET, Dataset, load_dataset
from secateurs.demo.seeding import global_generators_kept
from secateurs.errors import ModelSpecError
from secateurs.recovery import fit, top1_accuracy
from secateurs.runtime import torch_threads
from secateurs.storage import atomic_file, cache_dir

#: Bump when the architecture or training changes, so cached models are retrained.
_CACHE_VERSION = 2
#: One-cycle learning rate: warm up from lr / 25 over the first 30% of the steps, then anneal to zero.
_WARMUP_FRACTION = 0.3
_WARMUP_START = 1 / 25


@dataclass(frozen=True)
class TrainConfig:
    """How the demo CNN is trained; part of the cache key."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    seed: int = 0
    #: Intra-op threads while training: a CNN this small gains little from more, and loses a lot when cores are shared.
    threads: int = 1


class DemoCNN(nn.Module):
    """Three convolutions and two linear layers, 1-D or 2-D to suit the data: small enough to train in
    seconds, with layers of very different sizes (144 to 32,768 weights) so local and global pruning differ."""

    def __init__(self, sample_shape: Sequence[int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        channels, *spatial = sample_shape
        if len(spatial) not in (1, 2) or any(size < 4 for size in spatial):
            raise ModelSpecError(
                f"the demo CNN takes 1-D or 2-D inputs of at least 4 per side, got a sample shape {tuple(sample_shape)}"
            )
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(spatial) == 1 else (nn.Conv2d, nn.MaxPool2d)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=conv(channels, width, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=conv(width, 2 * width, 3, padding=1),
                relu2=nn.ReLU(),
                pool2=pool(2),
                conv3=conv(2 * width, 4 * width, 3, padding=1),
                relu3=nn.ReLU(),
                pool3=pool(2),
            )
        )
        flat = 4 * width * math.prod(size // 4 for size in spatial)
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(flat, 128),
                relu=nn.ReLU(),
                fc2=nn.Linear(128, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y``: the demo's task metric on tensors it holds."""
    return top1_accuracy(model, (x, y), batch_size=batch_size)


def build_model(data: Dataset, config: TrainConfig = TrainConfig()) -> DemoCNN:
    """The untrained demo CNN for ``data``, initialised from ``config.seed``."""
    with global_generators_kept():
        torch.manual_seed(config.seed)
        return DemoCNN(data.sample_shape, data.num_classes, config.width)


def one_cycle(progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: cosine warm-up, then cosine annealing. On digits the
    CNN reaches 98.4% test accuracy with it, 97.8% with plain cosine annealing (seed 0)."""

    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2

    if progress < _WARMUP_FRACTION:
        return cosine(_WARMUP_START, 1.0, progress / _WARMUP_FRACTION)
    return cosine(1.0, 0.0, (progress - _WARMUP_FRACTION) / (1 - _WARMUP_FRACTION))


def train(model: nn.Module, data: Dataset, config: TrainConfig, progress: bool = True) -> None:
    """AdamW with a one-cycle learning rate; deterministic for a given seed, the global generators untouched."""
    bar = tqdm(
        total=1,
        desc=f"training demo CNN on {data.name} ({config.epochs} epochs)",
        unit="model",
        disable=None if progress else True,
        leave=False,
    )
    with bar, global_generators_kept(), torch_threads(config.threads):
        fit(
            model,
            (data.x_train, data.y_train),
            epochs=config.epochs,
            lr=config.lr,
            weight_decay=config.weight_decay,
            lr_schedule=one_cycle,
            batch_size=config.batch_size,
            seed=config.seed,
            optimizer="adamw",
        )
        bar.update()
    model.eval()


@dataclass(frozen=True)
class TrainedModel:
    """A demo model trained here (the CNN or the ViT), its test accuracy, and where its weights are cached."""

    model: nn.Module
    accuracy: float
    train_seconds: float
    cached: bool
    path: Path


def _cache_path(dataset: str, config: TrainConfig) -> Path:
    key = json.dumps({"dataset": dataset, "train": asdict(config), "version": _CACHE_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "demo" / f"{dataset}-cnn-{digest}.safetensors"


def _load_cached(model: nn.Module, path: Path) -> TrainedModel | None:
    """The cached weights loaded into ``model``; None when there are none, or they are unreadable or stale
    (``model`` may then hold some of them: build a fresh one to train)."""
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        model.load_state_dict(safetensors.torch.load_file(str(path)))
        model.eval()
        return TrainedModel(model, float(metadata["accuracy"]), float(metadata["train_seconds"]), True, path)
    except (OSError, KeyError, RuntimeError, ValueError, safetensors.SafetensorError):
        return None


def cached_training(path: Path, data: Dataset, build: Callable[[], nn.Module], train_once: Callable[[nn.Module], None],
                    config: object, retrain: bool = False) -> TrainedModel:
    """A demo model from the cache at ``path`` when there, else ``build()``, ``train_once`` it, evaluate on the
    test split and cache it (atomically) with its accuracy, training time and ``config``."""
    cached = None if retrain else _load_cached(build(), path)
    if cached is not None:
        return cached
    model = build()
    start = time.perf_counter()
    train_once(model)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, data.x_test, data.y_test)
    metadata = {
        "accuracy": repr(test_accuracy),
        "train_seconds": f"{seconds:.3f}",
        "config": json.dumps(asdict(config)),  # type: ignore[call-overload]
    }
    with atomic_file(path) as temp:
        safetensors.torch.save_file(model.state_dict(), str(temp), metadata=metadata)
    return TrainedModel(model, test_accuracy, seconds, False, path)


def trained_model(
    dataset: str = DEFAULT_DATASET, config: TrainConfig = TrainConfig(), *, retrain: bool = False, progress: bool = True
) -> TrainedModel:
    """The trained demo CNN: from the cache when there, else trained now and cached (atomically)."""
    data = load_dataset(dataset)
    return cached_training(_cache_path(dataset, config), data, lambda: build_model(data, config),
                           lambda model: train(model, data, config, progress), config, retrain)
