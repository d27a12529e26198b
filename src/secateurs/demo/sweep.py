"""The demo: the seed articles' core experiment on a CNN trained here, in about a minute on a CPU.

A small CNN is trained on a data set that ships with a package (scikit-learn's digits by default;
see :mod:`secateurs.demo.datasets`) and cached under :func:`secateurs.storage.directory.cache_dir`. A copy of it is then
pruned with random unstructured, L1 unstructured, random structured and L2 structured pruning, at
ratios 0.1 to 0.9, locally (each layer loses the same fraction) and globally (one ranking over all
layers), and every pruned copy is evaluated for test accuracy, nonzero parameters, size on disk and
latency. The output layer is never pruned (secateurs' default selection).

Global structured ranking needs comparable scores. Filter norms of layers of different sizes are not
(a 3x3x32 filter has a larger L2 norm than a 3x3x1 one for the same per-weight magnitude), so for
global structured pruning each group's score is divided by the mean group score of its layer
(``normalize_scores=True``, the default of :func:`secateurs.prune` and :func:`secateurs.shrink`): a filter is ranked by how weak it is *within its layer*.

Structured pruning here is masked: whole output channels become zero but keep their place, so size on
disk (sparse format) shrinks while latency does not. Physically removing the channels is the job of
:mod:`secateurs.structural`; :func:`evaluate` takes any model, so a shrunk copy is evaluated the same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.core.criteria import Criterion, get_criterion
from secateurs.core.engine import prune
from secateurs.core.summary import summary
from secateurs.demo.datasets import Dataset, load_dataset
from secateurs.errors import ModelSpecError
from secateurs.measure import count_nonzero, count_params, measure_latency, size_on_disk
from secateurs.runtime import model_device, torch_threads
from secateurs.storage import atomic_file, cache_dir
from secateurs.structural import shrink

DEFAULT_DATASET = "digits"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCOPES = ("local", "global")
#: Bump when the architecture or training changes, so cached models are retrained.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class DemoMethod:
    """One pruning method of the experiment: a criterion name and a pattern, with a label for tables."""

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


@dataclass(frozen=True)
class DemoConfig:
    dataset: str = DEFAULT_DATASET
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    scopes: tuple[str, ...] = SCOPES
    methods: tuple[DemoMethod, ...] = METHODS
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    #: Latency: median over at least this many seconds of timed forward passes, per pruned model.
    latency_min_run_time: float = 0.05
    latency_batch: int = 64
    #: One thread by default: multi-threaded timings of a tiny model swing wildly when cores are shared.
    threads: int | None = 1
    retrain: bool = False


# ---- model and training --------------------------------------------------------------------------


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
    """Fraction of ``x`` classified as ``y`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            predicted = model(x[start : start + batch_size].to(device)).argmax(-1).cpu()
            correct += int((predicted == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(y)


def train(model: nn.Module, data: Dataset, config: TrainConfig, progress: bool = True) -> None:
    """AdamW with a one-cycle learning rate; deterministic for a given seed (torch's global RNG is untouched)."""
    generator = torch.Generator().manual_seed(config.seed)
    steps = config.epochs * math.ceil(len(data.y_train) / config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    epochs = tqdm(
        range(config.epochs),
        desc=f"training demo CNN on {data.name}",
        unit="epoch",
        disable=None if progress else True,
        leave=False,
    )
    model.train()
    with torch_threads(config.threads):
        for _ in epochs:
            order = torch.randperm(len(data.y_train), generator=generator)
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            epochs.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


@dataclass(frozen=True)
class TrainedModel:
    model: DemoCNN
    accuracy: float
    train_seconds: float
    cached: bool
    path: Path


def _cache_path(dataset: str, config: TrainConfig) -> Path:
    key = json.dumps({"dataset": dataset, "train": asdict(config), "version": _CACHE_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "demo" / f"{dataset}-cnn-{digest}.safetensors"


def build_model(data: Dataset, config: TrainConfig = TrainConfig()) -> DemoCNN:
    """The untrained demo CNN for ``data``, initialised from ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return DemoCNN(data.sample_shape, data.num_classes, config.width)


def trained_model(
    dataset: str = DEFAULT_DATASET, config: TrainConfig = TrainConfig(), *, retrain: bool = False, progress: bool = True
) -> TrainedModel:
    """The trained demo CNN: from the cache when there, else trained now and cached (atomically)."""
    data = load_dataset(dataset)
    model = build_model(data, config)
    path = _cache_path(dataset, config)
    if path.is_file() and not retrain:
        try:
            with safetensors.safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            model.load_state_dict(safetensors.torch.load_file(str(path)))
            model.eval()
            return TrainedModel(model, float(metadata["accuracy"]), float(metadata["train_seconds"]), True, path)
        except (OSError, KeyError, RuntimeError, ValueError, safetensors.SafetensorError):
            pass  # an unreadable or stale cache entry is simply retrained and replaced
    start = time.perf_counter()
    train(model, data, config, progress)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, data.x_test, data.y_test)
    metadata = {
        "accuracy": repr(test_accuracy),
        "train_seconds": f"{seconds:.3f}",
        "config": json.dumps(asdict(config)),
    }
    with atomic_file(path) as temp:
        safetensors.torch.save_file(model.state_dict(), str(temp), metadata=metadata)
    return TrainedModel(model, test_accuracy, seconds, False, path)




# ---- pruning and evaluation ----------------------------------------------------------------------


def prune_copy(
    model: nn.Module, method: DemoMethod, scope: str, ratio: float, seed: int = 0, example_inputs: Any = None
) -> nn.Module:
    """A pruned deep copy of ``model``; the original is untouched. Shrinking traces ``example_inputs``."""
    criterion: Criterion = get_criterion(method.criterion, seed=seed)
    pruned = copy.deepcopy(model)
    if method.shrink:
        if example_inputs is None:
            raise ValueError(f"{method.label} traces the model: pass example_inputs")
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
    latency_ms: float

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0


def evaluate(
    model: nn.Module, data: Dataset, *, latency_batch: int = 64, min_run_time: float = 0.05, threads: int | None = None
) -> Evaluation:
    """Test accuracy, parameters, nonzeros, size on disk (dense and sparse safetensors) and median
    latency of one batch of ``latency_batch`` test inputs. Works on any model that takes the data set's
    inputs: masked, finalized or physically shrunk."""
    size = size_on_disk(model)
    latency = measure_latency(model, (data.x_test[:latency_batch],), min_run_time=min_run_time, threads=threads)
    return Evaluation(
        accuracy=accuracy(model, data.x_test, data.y_test),
        params=count_params(model),
        nonzero=count_nonzero(model),
        dense_bytes=size.dense_bytes,
        sparse_bytes=size.sparse_bytes,
        latency_ms=latency.median_ms,
    )


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


def _most_pruned(model: nn.Module) -> tuple[str, float]:
    rows = [row for row in summary(model).rows if row.masked]
    worst = max(rows, key=lambda row: row.zero_rows, default=None)
    return (worst.name, worst.zero_rows) if worst else ("", 0.0)


@dataclass
class DemoResult:
    config: DemoConfig
    dataset: str
    dataset_description: str
    num_classes: int
    test_size: int
    dense: Evaluation
    rows: list[DemoRow]
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
            "reading": reading(self),
            "cached_model": self.cached,
            "cache_path": str(self.cache_path),
            "train_seconds": self.train_seconds,
            "seconds": self.seconds,
            "config": {**asdict(self.config), "methods": [asdict(m) for m in self.config.methods]},
        }


def run_demo(config: DemoConfig = DemoConfig(), *, progress: bool = True) -> DemoResult:
    """Train (or load) the CNN, prune it every way the config asks, evaluate each copy."""
    start = time.perf_counter()
    data = load_dataset(config.dataset)
    trained = trained_model(config.dataset, config.train, retrain=config.retrain, progress=progress)
    options = {
        "latency_batch": config.latency_batch,
        "min_run_time": config.latency_min_run_time,
        "threads": config.threads,
    }
    jobs = [(m, s, r) for m in config.methods for s in config.scopes for r in config.ratios]
    rows = []
    with torch_threads(config.threads):
        dense = evaluate(trained.model, data, **options)
        for method, scope, ratio in tqdm(
            jobs, desc="pruning and evaluating", unit="model", disable=None if progress else True, leave=False
        ):
            pruned = prune_copy(trained.model, method, scope, ratio, config.seed, data.x_test[:1])
            evaluation = evaluate(pruned, data, **options)
            rows.append(DemoRow(method.label, scope, ratio, evaluation, *_most_pruned(pruned)))
    return DemoResult(
        config=config,
        dataset=data.name,
        dataset_description=data.description,
        num_classes=data.num_classes,
        test_size=len(data.y_test),
        dense=dense,
        rows=rows,
        cached=trained.cached,
        cache_path=trained.path,
        train_seconds=trained.train_seconds,
        seconds=time.perf_counter() - start,
    )


# ---- reporting -----------------------------------------------------------------------------------


def _kb(size: int) -> str:
    return f"{size / 1024:.1f}"


def format_table(result: DemoResult) -> str:
    """Every evaluated model on one line, grouped by method and scope, the dense model first."""
    header = (
        f"{'method':<20} {'scope':<6} {'ratio':>5} {'accuracy':>8} {'change':>7} {'nonzero':>9} "
        f"{'sparsity':>8} {'size KB':>8} {'latency ms':>10}"
    )
    dense = result.dense

    def line(method: str, scope: str, ratio: str, ev: Evaluation) -> str:
        change = "" if ev is dense else f"{100 * (ev.accuracy - dense.accuracy):+.1f}"
        return (
            f"{method:<20} {scope:<6} {ratio:>5} {ev.accuracy:>8.1%} {change:>7} {ev.nonzero:>9,} "
            f"{ev.sparsity:>8.1%} {_kb(ev.sparse_bytes):>8} {ev.latency_ms:>10.3f}"
        )

    lines = [header, "-" * len(header), line("dense (not pruned)", "", "", dense)]
    previous = None
    for row in result.rows:
        if (row.method, row.scope) != previous:
            lines.append("")
            previous = (row.method, row.scope)
        lines.append(line(row.method, row.scope, f"{row.ratio:g}", row.evaluation))
    return "\n".join(lines)


def format_matrix(result: DemoResult) -> str:
    """Accuracy (%) of each method and scope at each ratio: the experiment at a glance."""
    ratios = sorted({row.ratio for row in result.rows})
    header = f"{'accuracy % at ratio':<27}" + "".join(f"{r:>6g}" for r in ratios)
    lines = [header, "-" * len(header)]
    for method in dict.fromkeys(row.method for row in result.rows):
        for scope in dict.fromkeys(row.scope for row in result.rows):
            curve = dict(result.curve(method, scope))
            if curve:
                lines.append(f"{method + ' ' + scope:<27}" + "".join(f"{100 * curve[r]:>6.1f}" for r in ratios))
    return "\n".join(lines)


def _kept_until(curve: list[tuple[float, float]], floor: float) -> float | None:
    """The largest ratio up to which accuracy never dropped below ``floor``."""
    kept = None
    for ratio, acc in curve:
        if acc < floor:
            break
        kept = ratio
    return kept


def _collapse(curve: list[tuple[float, float]], threshold: float) -> tuple[float, float] | None:
    """The first (ratio, accuracy) below ``threshold``, if any."""
    return next(((ratio, acc) for ratio, acc in curve if acc < threshold), None)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_structured(method: str) -> bool:
    return "structured" in method and "unstructured" not in method


def reading(result: DemoResult) -> str:
    """One paragraph saying what the numbers show, written from the numbers.

    "Keeps accuracy" means within 1 point of the dense model; "collapses" means below half-way between
    the dense accuracy and chance.
    """
    dense = result.dense.accuracy
    chance = 1.0 / result.num_classes
    floor, threshold = dense - 0.01, (dense + chance) / 2
    methods = list(dict.fromkeys(row.method for row in result.rows))
    scopes = list(dict.fromkeys(row.scope for row in result.rows))
    curves = {(m, s): result.curve(m, s) for m in methods for s in scopes if result.curve(m, s)}
    if not curves:
        return "Nothing was pruned."
    mean = {key: sum(acc for _, acc in curve) / len(curve) for key, curve in curves.items()}
    best = max(mean, key=mean.__getitem__)
    kept = _kept_until(curves[best], floor)
    last_ratio, last_acc = curves[best][-1]
    best_collapse = _collapse(curves[best], threshold)
    parts = [
        f"{_capitalized(best[0])} pruning ({best[1]}) keeps accuracy best: "
        + (
            f"it stays within 1 point of the dense {dense:.1%} up to ratio {kept:g}"
            if kept is not None
            else f"it has the highest accuracy on average, though it loses more than a point already at ratio {curves[best][0][0]:g}"
        )
        + f" and has {last_acc:.1%} at {last_ratio:g}."
    ]
    others = [key for key in curves if not _is_structured(key[0]) and key[0] != best[0]]
    if others:
        worst = min(others, key=mean.__getitem__)
        hit = _collapse(curves[worst], threshold)
        fate = (
            f"collapses to {hit[1]:.1%} at ratio {hit[0]:g}"
            if hit
            else f"ends at {curves[worst][-1][1]:.1%} at ratio {curves[worst][-1][0]:g}"
        )
        parts.append(f"{_capitalized(worst[0])} ({worst[1]}) does worst of the unstructured methods: it {fate}.")
    structured = {key: _collapse(curve, threshold) for key, curve in curves.items() if _is_structured(key[0])}
    hits = {key: hit for key, hit in structured.items() if hit}
    if hits:
        earliest = min(hit[0] for hit in hits.values())
        compared = (
            f", against {best_collapse[0]:g} for {best[0]} ({best[1]})"
            if best_collapse
            else f", while {best[0]} ({best[1]}) never does"
        )
        verb = "collapses earlier" if not best_collapse or earliest < best_collapse[0] else "collapses too"
        by_method: dict[str, list[str]] = {}
        for (method, scope), hit in hits.items():
            by_method.setdefault(method, []).append(f"{hit[0]:g} ({scope})")
        listed = ", ".join(f"{' and '.join(at)} for {method}" for method, at in by_method.items())
        emptied = max(
            (
                row
                for row in result.rows
                if _is_structured(row.method)
                and row.scope == "global"
                and (row.method, row.scope) in hits
                and row.ratio == hits[(row.method, row.scope)][0]
            ),
            key=lambda row: row.most_pruned_fraction,
            default=None,
        )
        why = "Each removed channel takes a whole feature map with it"
        if emptied is not None and emptied.most_pruned_fraction >= 0.75:
            why += (
                f"; the global ranking also thins layers unevenly ({emptied.method} at {emptied.ratio:g} removes "
                f"{emptied.most_pruned_fraction:.0%} of the channels of {emptied.most_pruned_layer.removesuffix('.weight')})"
            )
        parts.append(
            f"Structured pruning {verb}: accuracy falls below {threshold:.0%} (half-way to chance) at ratio {listed}{compared}. {why}."
        )
    elif structured:
        parts.append(f"Structured pruning never falls below {threshold:.0%} (half-way to chance) at these ratios.")
    mid = min(result.config.ratios, key=lambda r: abs(r - 0.5))
    unstructured_mid = [row.evaluation for row in result.rows if row.ratio == mid and not _is_structured(row.method)]
    if unstructured_mid:
        size = (
            f"Size on disk follows the nonzeros in the sparse format ({_kb(result.dense.sparse_bytes)} KB dense, "
            f"{_kb(unstructured_mid[0].sparse_bytes)} KB at ratio {mid:g} unstructured)"
        )
        # Only fewer parameters (channels physically removed) can make a model faster; comparing timings
        # alone would read noise as a speed-up.
        shrunk = sorted(
            row.evaluation.latency_ms
            for row in result.rows
            if row.ratio >= mid and row.evaluation.params < result.dense.params
        )
        if shrunk:
            parts.append(
                f"{size}; models with channels physically removed, from ratio {mid:g}, run in a median "
                f"{shrunk[len(shrunk) // 2]:.3f} ms per batch against {result.dense.latency_ms:.3f} ms dense."
            )
        else:
            latencies = sorted(row.evaluation.latency_ms for row in result.rows)
            low, high = latencies[len(latencies) // 4], latencies[(3 * len(latencies)) // 4]
            parts.append(
                f"{size}, but latency does not change beyond timing noise: the middle half of the pruned models take "
                f"{low:.3f} to {high:.3f} ms per batch, the dense model {result.dense.latency_ms:.3f} ms, because masked "
                "zeros are still multiplied; only physically removing channels makes the model faster."
            )
    return " ".join(parts)


def format_report(result: DemoResult, *, full: bool = True) -> str:
    """The demo's printed output: what was run, the table, the accuracy matrix and the reading."""
    source = (
        f"cached model {result.cache_path}"
        if result.cached
        else f"trained in {result.train_seconds:.1f} s, cached at {result.cache_path}"
    )
    head = (
        f"Demo CNN on {result.dataset_description} ({result.test_size} test samples, {source}).\n"
        f"Pruned layers: every Conv and Linear layer except the output layer. Size = sparse safetensors; "
        f"latency = median ms per batch of {result.config.latency_batch} (noisy on a shared machine)."
    )
    blocks = [head]
    if full:
        blocks.append(format_table(result))
    blocks += [format_matrix(result), reading(result), f"Finished in {result.seconds:.1f} s."]
    return "\n\n".join(blocks)


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
