"""How big and how fast a model is: parameters, nonzeros, MACs, latency and size on disk.

Every function takes a model and, where a forward pass is needed, example inputs: a tuple of
positional arguments or a mapping of keyword arguments (Hugging Face style). Forward passes run in
eval mode under ``torch.no_grad()``; the model's training flag is restored afterwards.

MACs are multiply-accumulates counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts matrix multiplications and convolutions (2 FLOPs per MAC), so ``MACs = FLOPs / 2``;
elementwise operations (activations, norms, additions) are not counted. Masked pruning leaves the
dense MACs unchanged (the zeros are still multiplied); :func:`count_nonzero_macs` gives the MACs
that touch a nonzero weight, what an ideal sparse kernel would execute.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from secateurs.core.summary import count_params
from secateurs.core.targets import is_linear_like
from secateurs.runtime import Inputs, call_model, inference
from secateurs.storage import encoded_size


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
    """Median wall time of one forward pass, after warm-up, from :mod:`torch.utils.benchmark`."""

    median_ms: float
    iqr_ms: float
    runs: int
    threads: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _benchmark_module() -> Any:
    """``torch.utils.benchmark``, imported without the CUDA_HOME warning it logs on CPU-only machines."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def measure_latency(
    model: nn.Module,
    inputs: Inputs,
    *,
    min_run_time: float = 0.2,
    threads: int | None = None,
    warmup: int = 3,
) -> Latency:
    """Time the forward pass with ``torch.utils.benchmark.Timer`` (``blocked_autorange``).

    ``warmup`` untimed calls come first (allocator, lazy init, caches); then calls are timed in blocks
    for at least ``min_run_time`` seconds and the median per call is reported. ``threads`` defaults to
    torch's current intra-op thread count. On CUDA the timer synchronizes for us.
    """
    threads = threads or torch.get_num_threads()
    with inference(model):
        timer = _benchmark_module().Timer(
            stmt="call_model(model, inputs)",
            globals={"call_model": call_model, "model": model, "inputs": inputs},
            num_threads=threads,
        )
        if warmup > 0:
            timer.timeit(warmup)
        result = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(
        median_ms=result.median * 1e3,
        iqr_ms=result.iqr * 1e3,
        runs=len(result.raw_times) * result.number_per_run,
        threads=threads,
    )


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
    """Everything :func:`measure` found; ``latency`` is None when it was not timed."""

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
            "latency": None if self.latency is None else self.latency.to_dict(),
        }


def measure(
    model: nn.Module,
    inputs: Inputs,
    *,
    latency: bool = True,
    min_run_time: float = 0.2,
    threads: int | None = None,
) -> Measurements:
    """All measurements of ``model`` on ``inputs`` at once (latency optional: it is the slow one)."""
    macs = mac_counts(model, inputs)
    return Measurements(
        params=count_params(model),
        nonzero=count_nonzero(model),
        macs=macs.dense,
        nonzero_macs=macs.nonzero,
        size=size_on_disk(model),
        latency=measure_latency(model, inputs, min_run_time=min_run_time, threads=threads) if latency else None,
    )
