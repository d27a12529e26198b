"""The demo: the seed articles' core experiment on a CNN trained here, in about a minute on a CPU.

A small CNN (:mod:`secateurs.demo.model`) is trained on a data set that ships with a package
(scikit-learn's digits by default; see :mod:`secateurs.demo.datasets`) and cached. A copy of it is then
pruned with random unstructured, L1 unstructured, random structured and L2 structured pruning, at
ratios 0.1 to 0.9, locally (each layer loses the same fraction) and globally (one ranking over all
layers), and every pruned copy is measured for test accuracy, nonzero parameters, size on disk and
latency. The output layer is never pruned (secateurs' default selection).

Global structured ranking needs comparable scores. Filter norms of layers of different sizes are not
(a 3x3x32 filter has a larger L2 norm than a 3x3x1 one for the same per-weight magnitude), so for
global structured pruning each group's score is divided by the mean group score of its layer
(``normalize_scores=True``, the default of :func:`secateurs.prune` and :func:`secateurs.shrink`): a filter is
ranked by how weak it is *within its layer*.

Structured pruning here is masked: whole output channels become zero but keep their place, so size on
disk (sparse format) shrinks while latency does not. Physically removing the channels is the job of
:mod:`secateurs.structural`; :func:`measure_copy` takes any model, so a shrunk copy is measured the same way.

Latency: the dense model and every pruned copy are timed in one comparison
(:func:`secateurs.measure.compare_latency`), interleaved round by round on the same batch, so each copy's
time is reported with its spread and as a ratio to the dense model's time in the same rounds.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from secateurs.core.criteria import Criterion, get_criterion
from secateurs.core.engine import prune
from secateurs.core.summary import summary
from secateurs.demo.datasets import DEFAULT_DATASET, Dataset, load_dataset
from secateurs.demo.model import TrainConfig, accuracy, trained_model
from secateurs.demo.reading import reading
from secateurs.errors import ModelSpecError
from secateurs.measure import (
    LatencyComparison,
    compare_latency,
    count_nonzero,
    count_params,
    size_on_disk,
)
from secateurs.runtime import torch_threads
from secateurs.structural import shrink

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCOPES = ("local", "global")


@dataclass(frozen=True)
class DemoMethod:
    """One pruning method of the experiment: a criterion name and a granularity, with a label for tables."""

    label: str
    criterion: str
    granularity: str
    #: Remove the pruned channels physically (secateurs.structural.shrink) instead of masking them.
    shrink: bool = False

    @property
    def structured(self) -> bool:
        return self.granularity != "unstructured"


METHODS = (
    DemoMethod("random unstructured", "random", "unstructured"),
    DemoMethod("L1 unstructured", "l1", "unstructured"),
    DemoMethod("random structured", "random", "channel"),
    DemoMethod("L2 structured", "l2", "channel"),
    DemoMethod("L2 structured shrunk", "l2", "channel", shrink=True),
)


@dataclass(frozen=True)
class DemoConfig:
    dataset: str = DEFAULT_DATASET
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    scopes: tuple[str, ...] = SCOPES
    methods: tuple[DemoMethod, ...] = METHODS
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    #: Latency: seconds of timed forward passes per model (dense and each copy), in interleaved rounds.
    latency_budget_s: float = 0.05
    latency_batch: int = 64
    #: One thread by default: multi-threaded timings of a tiny model swing wildly when cores are shared.
    threads: int = 1
    retrain: bool = False


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.1,0.5,0.9"`` as a tuple of fractions in (0, 1)."""
    try:
        ratios = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        ratios = ()
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ModelSpecError(f"ratios {text!r} must be comma-separated fractions between 0 and 1, e.g. 0.1,0.5,0.9")
    return ratios


def default_config(**overrides: Any) -> DemoConfig:
    """A :class:`DemoConfig` with some fields replaced (``epochs`` goes to the training config)."""
    config = DemoConfig()
    if "epochs" in overrides:
        config = replace(config, train=replace(config.train, epochs=overrides.pop("epochs")))
    return replace(config, **overrides)


# ---- pruning and measuring one copy ---------------------------------------------------------------


def prune_copy(
    model: nn.Module, method: DemoMethod, scope: str, ratio: float, seed: int = 0, example_inputs: Any = None
) -> nn.Module:
    """A pruned deep copy of ``model``; the original is untouched. Shrinking traces ``example_inputs``."""
    criterion: Criterion = get_criterion(method.criterion, seed=seed)
    if method.shrink and example_inputs is None:
        raise ValueError(f"{method.label} traces the model: pass example_inputs")
    pruned = copy.deepcopy(model)
    if method.shrink:
        shrink(pruned, example_inputs, ratio, method=criterion, scope=scope)  # type: ignore[arg-type]
    else:
        prune(pruned, ratio, method=criterion, granularity=method.granularity, scope=scope)  # type: ignore[arg-type]
    return pruned


@dataclass(frozen=True)
class Evaluation:
    """What the demo reports for one model."""

    accuracy: float
    params: int
    nonzero: int
    dense_bytes: int
    sparse_bytes: int
    #: Median ms per batch, its relative spread (interquartile range / median), and the median of its
    #: per-round ratios to the dense model's time (1 for the dense model).
    latency_ms: float
    latency_spread: float
    latency_ratio: float

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    @property
    def sparse_kb(self) -> float:
        return self.sparse_bytes / 1024


def measure_copy(model: nn.Module, data: Dataset, timing: LatencyComparison, name: str) -> Evaluation:
    """Test accuracy, parameters, nonzeros, size on disk (dense and sparse safetensors), and the latency of
    entry ``name`` of ``timing`` (:func:`time_copies`). Works on any model that takes the data set's inputs:
    the dense model, or a masked, finalized or physically shrunk copy."""
    size = size_on_disk(model)
    latency = timing[name]
    return Evaluation(
        accuracy=accuracy(model, data.x_test, data.y_test),
        params=count_params(model),
        nonzero=count_nonzero(model),
        dense_bytes=size.dense_bytes,
        sparse_bytes=size.sparse_bytes,
        latency_ms=latency.median_ms,
        latency_spread=latency.spread,
        latency_ratio=timing.ratios[name].median,
    )


def time_copies(models: dict[str, nn.Module], data: Dataset, config: DemoConfig) -> LatencyComparison:
    """The models (dense first) timed interleaved on one batch of test inputs, as the config says."""
    batch = (data.x_test[: config.latency_batch],)
    return compare_latency(models, batch, threads=config.threads, budget_s=config.latency_budget_s)


def _most_pruned(model: nn.Module) -> tuple[str, float]:
    """The pruned layer that lost the largest fraction of its output channels, and that fraction."""
    rows = [row for row in summary(model).rows if row.masked]
    worst = max(rows, key=lambda row: row.zero_rows, default=None)
    return (worst.name, worst.zero_rows) if worst else ("", 0.0)


# ---- the experiment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRow:
    method: str
    scope: str
    ratio: float
    evaluation: Evaluation
    #: The pruned layer that lost the largest fraction of its output channels (all-zero rows), and that fraction.
    most_pruned_layer: str = ""
    most_pruned_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scope": self.scope,
            "ratio": self.ratio,
            **asdict(self.evaluation),
            "sparsity": self.evaluation.sparsity,
            "most_pruned_layer": self.most_pruned_layer,
            "most_pruned_fraction": self.most_pruned_fraction,
        }


@dataclass
class DemoResult:
    config: DemoConfig
    dataset: str
    dataset_description: str
    num_classes: int
    test_size: int
    dense: Evaluation
    rows: list[DemoRow]
    #: The dense model and every copy, timed interleaved in one comparison.
    timing: LatencyComparison
    cached: bool
    cache_path: Path
    train_seconds: float
    seconds: float

    def curve(self, method: str, scope: str) -> list[tuple[float, float]]:
        """(ratio, accuracy) pairs of one method and scope, in ratio order."""
        return sorted(
            (row.ratio, row.evaluation.accuracy) for row in self.rows if row.method == method and row.scope == scope
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "test_size": self.test_size,
            "dense": {**asdict(self.dense), "sparsity": self.dense.sparsity},
            "rows": [row.to_dict() for row in self.rows],
            "latency": {key: self.timing.to_dict()[key] for key in ("threads", "rounds", "spread", "noisy")},
            "reading": reading(self),
            "cached_model": self.cached,
            "cache_path": str(self.cache_path),
            "train_seconds": self.train_seconds,
            "seconds": self.seconds,
            "config": {**asdict(self.config), "methods": [asdict(m) for m in self.config.methods]},
        }


def run_demo(config: DemoConfig = DemoConfig(), *, progress: bool = True) -> DemoResult:
    """Train (or load) the CNN, prune a copy of it every way the config asks, time the dense model and every
    copy together (interleaved), then measure each copy."""
    start = time.perf_counter()
    data = load_dataset(config.dataset)
    trained = trained_model(config.dataset, config.train, retrain=config.retrain, progress=progress)
    jobs = [(m, s, r) for m in config.methods for s in config.scopes for r in config.ratios]
    bar = tqdm(jobs, desc="pruning", unit="model", disable=None if progress else True, leave=False)
    with torch_threads(config.threads):
        copies = [prune_copy(trained.model, *job, config.seed, data.x_test[:1]) for job in bar]
        timing = time_copies({"dense": trained.model, **{str(i): c for i, c in enumerate(copies)}}, data, config)
        dense = measure_copy(trained.model, data, timing, "dense")
        rows = [
            DemoRow(method.label, scope, ratio, measure_copy(model, data, timing, str(i)), *_most_pruned(model))
            for i, ((method, scope, ratio), model) in enumerate(zip(jobs, copies))
        ]
    return DemoResult(
        config=config,
        dataset=data.name,
        dataset_description=data.description,
        num_classes=data.num_classes,
        test_size=len(data.y_test),
        dense=dense,
        rows=rows,
        timing=timing,
        cached=trained.cached,
        cache_path=trained.path,
        train_seconds=trained.train_seconds,
        seconds=time.perf_counter() - start,
    )
