"""Small real data sets that ship inside Python packages, so the demo never downloads anything.

* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), split 75/25,
  stratified, with a fixed seed.
* ``mnist1d``: MNIST-1D (Greydanus, 2020), 5,000 one-dimensional signals of length 40, generated
  locally by the ``mnist1d`` package with its default arguments and its own 4,000/1,000 split.

Both splits are fixed, so accuracies are comparable between runs and machines.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from secateurs.demo.seeding import global_generators_kept
from secateurs.errors import MissingDependencyError, ModelSpecError


@dataclass(frozen=True)
class Dataset:
    """A classification data set as tensors: inputs ``[N, C, ...]`` (float32) and labels ``[N]`` (int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input, channels first: ``(1, 8, 8)`` for digits, ``(1, 40)`` for MNIST-1D."""
        return tuple(self.x_train.shape[1:])


def _import(module: str, package: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"the {package} data set needs the package {package!r}: pip install {package}  (or pip install 'secateurs[demo]')"
        ) from None


def _digits() -> Dataset:
    _import("sklearn", "scikit-learn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)

    return Dataset(
        "digits",
        tensor(x_train),
        torch.tensor(y_train),
        tensor(x_test),
        torch.tensor(y_test),
        10,
        "scikit-learn digits: 8x8 grey images of handwritten digits",
    )


def _mnist1d() -> Dataset:
    _import("mnist1d", "mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32).unsqueeze(1)

    return Dataset(
        "mnist1d",
        tensor(data["x"]),
        torch.tensor(data["y"], dtype=torch.long),
        tensor(data["x_test"]),
        torch.tensor(data["y_test"], dtype=torch.long),
        10,
        "MNIST-1D: 1-D signals of length 40 made from 10 digit templates",
    )


DATASETS: dict[str, Callable[[], Dataset]] = {"digits": _digits, "mnist1d": _mnist1d}
DEFAULT_DATASET = "digits"
_LOADED: dict[str, Dataset] = {}


def load_dataset(name: str) -> Dataset:
    """One of :data:`DATASETS`, built once per process."""
    if name not in DATASETS:
        raise ModelSpecError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if name not in _LOADED:
        # mnist1d's make_dataset seeds NumPy's and Python's global generators, and importing scikit-learn's
        # loaders draws from Python's: leave the caller's random streams as they were.
        with global_generators_kept():
            _LOADED[name] = DATASETS[name]()
    return _LOADED[name]
