"""How big and how fast a model is: parameters, nonzeros, MACs, latency and size on disk.

Every function takes a model and, where a forward pass is needed, example inputs: a tuple of
positional arguments or a mapping of keyword arguments (Hugging Face style). Forward passes run in
eval mode under ``torch.no_grad()``; the model's training flag is restored afterwards.

MACs are multiply-accumulates counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matrix multiplications and convolutions (2 FLOPs per MAC), so ``MACs = FLOPs / 2``;
elementwise operations (activations, norms, additions) are not counted. Masked pruning leaves the
dense MACs unchanged (the zeros are still multiplied); :func:`count_nonzero_macs` gives the MACs
that touch a nonzero weight, what an ideal sparse kernel would execute.

Latency is timed one way, by :func:`compare_latency`, for every command, benchmark and layer: models that
are compared (dense and pruned) run in the same process, interleaved round by round after warm-up, with
denormals flushed, on a stated number of threads (1 unless asked), and each is reported with its median,
its spread, and its ratio to the reference. :func:`measure_latency` is the same for one model.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from secateurs.core.summary import count_params
from secateurs.core.targets import is_linear_like
from secateurs.runtime import Inputs, call_model, inference, model_device, torch_threads
from secateurs.storage import encoded_size

#: A time or ratio whose interquartile range exceeds this fraction of its median is reported as noisy.
NOISY_SPREAD = 0.10
#: Fewest timed rounds, however slow a model is: a median and a spread need a few samples.
MIN_ROUNDS = 3
#: Most timed rounds; a fast model gets longer blocks of calls per round instead of more rounds.
MAX_ROUNDS = 15
#: Seconds of timed calls per model, spread over the rounds, unless asked otherwise.
DEFAULT_BUDGET_S = 0.5


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero; tied parameters count once."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


@dataclass(frozen=True)
class MacCounts:
    """Multiply-accumulates of one forward pass: all of them, and those that touch a nonzero weight."""

    dense: int
    nonzero: int


def mac_counts(model: nn.Module, inputs: Inputs) -> MacCounts:
    """Dense and nonzero MACs from a single counted forward pass.

    Nonzero MACs scale each Linear/Conv layer's MACs by its weight density: in those layers every
    weight takes part in the same number of MACs, so the figure is exact for them. Everything else
    (products of activations in attention, ...) is counted in full.
    """
    counter = FlopCounterMode(display=False)
    with inference(model), counter:
        call_model(model, inputs)
    total = counter.get_total_flops()
    by_module = counter.get_flop_counts()
    prefix = type(model).__name__
    zero_flops = 0.0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not is_linear_like(module) or not isinstance(weight, torch.Tensor) or weight.numel() == 0:
            continue
        flops = sum(by_module.get(f"{prefix}.{name}" if name else prefix, {}).values())
        if flops:
            density = int(torch.count_nonzero(weight.detach())) / weight.numel()
            zero_flops += flops * (1.0 - density)
    return MacCounts(dense=total // 2, nonzero=round(total - zero_flops) // 2)


def count_macs(model: nn.Module, inputs: Inputs) -> int:
    """Dense multiply-accumulates of one forward pass on ``inputs`` (FLOPs / 2, matmuls and convs only)."""
    return mac_counts(model, inputs).dense


def count_nonzero_macs(model: nn.Module, inputs: Inputs) -> int:
    """MACs that involve a nonzero weight (see :func:`mac_counts`)."""
    return mac_counts(model, inputs).nonzero


@dataclass(frozen=True)
class Latency:
    """Wall time of one forward pass: the median over timed rounds and the interquartile range across them."""

    median_ms: float
    iqr_ms: float
    rounds: int
    #: Timed calls in all rounds together.
    calls: int
    threads: int

    @property
    def spread(self) -> float:
        """Interquartile range as a fraction of the median."""
        return relative_spread(self.iqr_ms, self.median_ms)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread": self.spread, "noisy": self.noisy}


@dataclass(frozen=True)
class LatencyRatio:
    """A model's time over the reference model's: median and interquartile range of the per-round ratios.
    Both were timed in the same round, so load that slows the machine for a while cancels out."""

    median: float
    iqr: float

    @property
    def spread(self) -> float:
        """Interquartile range as a fraction of the median."""
        return relative_spread(self.iqr, self.median)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread": self.spread, "noisy": self.noisy}


def relative_spread(iqr: float, median: float) -> float:
    """``iqr / median``: how far apart the middle half of the samples lie, relative to their median."""
    return iqr / median if median > 0 else 0.0


@dataclass(frozen=True)
class LatencyComparison:
    """Models timed on the same inputs, interleaved round by round (:func:`compare_latency`); ``ratios``
    hold every model's time over the ``reference`` (the first model; its own ratio is 1)."""

    reference: str
    latencies: dict[str, Latency]
    ratios: dict[str, LatencyRatio]
    threads: int
    rounds: int

    def __getitem__(self, name: str) -> Latency:
        return self.latencies[name]

    @property
    def spread(self) -> float:
        """The largest relative spread of any model's time or any ratio."""
        return max(item.spread for item in (*self.latencies.values(), *self.ratios.values()))

    @property
    def noisy(self) -> bool:
        """Whether any time or ratio spreads more than :data:`NOISY_SPREAD`: the figures are not to be trusted."""
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "threads": self.threads,
            "rounds": self.rounds,
            "spread": self.spread,
            "noisy": self.noisy,
            "latencies": {name: latency.to_dict() for name, latency in self.latencies.items()},
            "ratios": {name: ratio.to_dict() for name, ratio in self.ratios.items()},
        }


def compare_latency(
    models: Mapping[str, nn.Module] | Sequence[nn.Module],
    inputs: Inputs,
    *,
    threads: int = 1,
    budget_s: float = DEFAULT_BUDGET_S,
    warmup: int = 3,
    rounds: int | None = None,
) -> LatencyComparison:
    """Time the forward pass of every model on the same ``inputs``, interleaved, and compare each to the first.

    Each round times every model once, as a block of calls, the order rotating from round to round, so that
    load from other work hits every model alike; ratios are taken round by round. Before the rounds each model
    makes ``warmup`` calls that are not counted (allocator, lazy initialisation, caches); the fastest of them
    after the first estimates a call's time, which plans the rounds: each model gets about ``budget_s`` seconds
    of timed calls over up to :data:`MAX_ROUNDS` rounds. A model too slow for that gets fewer rounds, never
    below :data:`MIN_ROUNDS` even past the budget, rather than a number cut short. ``rounds`` fixes the count.

    Timing runs on ``threads`` intra-op threads with denormals flushed on the calling thread (random-init
    and pruned weights produce them, and each costs many times a normal float on x86), every model in eval
    mode under ``no_grad``; threads, the denormal flag and every module's train flag come back as they were.
    Models given as a sequence are named ``"0"``, ``"1"``, ...
    """
    named = dict(models) if isinstance(models, Mapping) else {str(i): model for i, model in enumerate(models)}
    _check_timing_request(named, threads, budget_s, warmup, rounds)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        stack.enter_context(_denormals_flushed())
        for model in named.values():
            stack.enter_context(inference(model))
        call_seconds = {name: _warm_up(model, inputs, warmup) for name, model in named.items()}
        rounds, calls = _plan(call_seconds, budget_s, rounds)
        seconds = _timed_rounds(named, inputs, rounds, calls)
    return _comparison(seconds, calls, threads)


def measure_latency(
    model: nn.Module,
    inputs: Inputs,
    *,
    threads: int = 1,
    budget_s: float = DEFAULT_BUDGET_S,
    warmup: int = 3,
    rounds: int | None = None,
) -> Latency:
    """One model timed as :func:`compare_latency` times several: its median and spread over the rounds."""
    return compare_latency([model], inputs, threads=threads, budget_s=budget_s, warmup=warmup, rounds=rounds)["0"]


def _check_timing_request(
    models: Mapping[str, nn.Module], threads: int, budget_s: float, warmup: int, rounds: int | None
) -> None:
    """Refuse a request that cannot be timed, before any forward pass."""
    if not models:
        raise ValueError("models is empty: give at least one model to time")
    if not all(isinstance(model, nn.Module) for model in models.values()):
        raise ValueError("models must be torch.nn.Module objects (a mapping of names to modules, or a list of them)")
    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads={threads!r}: give a whole number of intra-op threads, 1 or more")
    if not budget_s > 0:
        raise ValueError(f"budget_s={budget_s!r}: give the seconds of timed calls per model, more than 0")
    if warmup < 1:
        raise ValueError(f"warmup={warmup!r}: at least 1 (warm-up calls also estimate the time that plans the rounds)")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds={rounds!r}: give 1 or more, or None to fit the rounds to budget_s")


@contextlib.contextmanager
def denormal_setting_kept() -> Iterator[None]:
    """This thread's denormal setting as it was before, whatever the body sets: onnxruntime, for one,
    flushes denormals on the thread that opens a session and never restores them."""
    was_flushing = flushing_denormals()
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


@contextlib.contextmanager
def _denormals_flushed() -> Iterator[None]:
    """Denormals flushed to zero on this thread for the duration; the previous setting comes back after."""
    with denormal_setting_kept():
        torch.set_flush_denormal(True)
        yield


def flushing_denormals() -> bool:
    """Whether this thread flushes denormals now. torch can set the flag but not read it, so this probes it:
    a quarter of the smallest normal float32 is a denormal, or zero when flushed."""
    return float(torch.tensor([torch.finfo(torch.float32).tiny]) / 4) == 0.0


def _block_seconds(model: nn.Module, inputs: Inputs, calls: int) -> float:
    """Wall time of ``calls`` forward passes in a row, the device's queue drained before and after.

    Timed with :func:`time.perf_counter` rather than ``torch.utils.benchmark.Timer``, whose ``timeit``
    adds at least two warm-up calls per block: three times the cost of a slow model's one-call block."""
    device = model_device(model)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        call_model(model, inputs)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a block's time includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _warm_up(model: nn.Module, inputs: Inputs, calls: int) -> float:
    """``calls`` uncounted forward passes; the fastest after the first (which pays for lazy initialisation)
    estimates a call's time, to plan the rounds, whatever load hit one of them."""
    seconds = [_block_seconds(model, inputs, 1) for _ in range(calls)]
    return min(seconds[1:] or seconds)


def _plan(call_seconds: Mapping[str, float], budget_s: float, rounds: int | None) -> tuple[int, dict[str, int]]:
    """The number of rounds (fitted to the slowest model unless given), and each model's calls per round,
    so that every model gets about ``budget_s`` seconds of timed calls in all."""
    if rounds is None:
        rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, int(budget_s / max(call_seconds.values()))))
    block_s = budget_s / rounds
    return rounds, {name: max(1, round(block_s / max(seconds, 1e-9))) for name, seconds in call_seconds.items()}


def _timed_rounds(
    models: Mapping[str, nn.Module], inputs: Inputs, rounds: int, calls: Mapping[str, int]
) -> dict[str, list[float]]:
    """Seconds per call of every model in every round; round ``i`` starts with model ``i`` (mod their number)."""
    names = list(models)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        start = index % len(names)
        for name in names[start:] + names[:start]:
            seconds[name].append(_block_seconds(models[name], inputs, calls[name]) / calls[name])
    return seconds


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (linear interpolation)."""
    quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    q1, median, q3 = torch.quantile(torch.tensor(values, dtype=torch.float64), quartiles).tolist()
    return q1, median, q3


def _comparison(seconds: Mapping[str, list[float]], calls: Mapping[str, int], threads: int) -> LatencyComparison:
    """Medians and spreads of the per-round seconds, and of every model's per-round ratio to the first."""
    reference = next(iter(seconds))
    rounds = len(seconds[reference])
    latencies, ratios = {}, {}
    for name, samples in seconds.items():
        q1, median, q3 = _quartiles(samples)
        latencies[name] = Latency(median * 1e3, (q3 - q1) * 1e3, rounds, rounds * calls[name], threads)
        r1, ratio, r3 = _quartiles([s / r for s, r in zip(samples, seconds[reference])])
        ratios[name] = LatencyRatio(ratio, r3 - r1)
    return LatencyComparison(reference, latencies, ratios, threads, rounds)


@dataclass(frozen=True)
class DiskSize:
    """Bytes of the model's weights as files: plain safetensors, and secateurs' sparse format."""

    dense_bytes: int
    sparse_bytes: int

    @property
    def ratio(self) -> float:
        """Sparse size as a fraction of the dense size."""
        return self.sparse_bytes / self.dense_bytes if self.dense_bytes else 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "ratio": self.ratio}


def size_on_disk(model: nn.Module) -> DiskSize:
    """Exact file sizes of the model's state dict in both formats of :mod:`secateurs.storage` (serialised in memory)."""
    state = model.state_dict()
    return DiskSize(dense_bytes=encoded_size(state, "dense"), sparse_bytes=encoded_size(state, "sparse"))


@dataclass(frozen=True)
class Measurements:
    """Everything :func:`measure` found about one model; ``latency`` is None when it was not timed.

    To compare models (dense and pruned), measure each with ``latency=False`` and time them together with
    :func:`compare_latency`; :meth:`with_latency` attaches each one's share of the comparison."""

    params: int
    nonzero: int
    macs: int
    nonzero_macs: int
    size: DiskSize
    latency: Latency | None = None

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency.median_ms

    def with_latency(self, latency: Latency | None) -> Measurements:
        """The same measurements with a latency timed elsewhere (one model's entry of a comparison)."""
        return replace(self, latency=latency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "nonzero": self.nonzero,
            "sparsity": self.sparsity,
            "macs": self.macs,
            "nonzero_macs": self.nonzero_macs,
            "dense_bytes": self.size.dense_bytes,
            "sparse_bytes": self.size.sparse_bytes,
            "latency_ms": self.latency_ms,
            "latency_spread": None if self.latency is None else self.latency.spread,
            "latency_noisy": None if self.latency is None else self.latency.noisy,
            "latency": None if self.latency is None else self.latency.to_dict(),
        }


def measure(
    model: nn.Module,
    inputs: Inputs,
    *,
    latency: bool = True,
    budget_s: float = DEFAULT_BUDGET_S,
    threads: int = 1,
) -> Measurements:
    """All measurements of one model on ``inputs`` at once; ``latency=False`` skips timing, the slow part
    (and the part to do with :func:`compare_latency` when another model is compared)."""
    macs = mac_counts(model, inputs)
    return Measurements(
        params=count_params(model),
        nonzero=count_nonzero(model),
        macs=macs.dense,
        nonzero_macs=macs.nonzero,
        size=size_on_disk(model),
        latency=measure_latency(model, inputs, budget_s=budget_s, threads=threads) if latency else None,
    )
