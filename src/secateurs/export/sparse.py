"""Block-sparse execution on CPU: pruned Linear layers run torch's BSR or CSR kernels where that pays.

Zeros cost as much as any weight in a dense matmul. torch's sparse layouts skip them, but their kernels
beat dense only well above some sparsity, which depends on the layer's shape, the batch, the block
structure and the machine. So :func:`to_block_sparse` decides layer by layer, on this machine: it captures
each layer's real input on the example inputs, times dense against BSR (tiles of the weight's own block
structure, see :func:`block_structure`) and CSR with :func:`secateurs.measure.compare_latency`, and swaps
in a :class:`SparseLinear` only where a sparse kernel is at least ``min_speedup`` times faster.

It works on a copy: the masks of the copy are folded into its weights (:func:`secateurs.finalize`), the
swap happens there, and the given model is never changed, so an error leaves nothing half-swapped.
The swapped model is for inference: its sparse weights are buffers without gradients.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from secateurs.core.masks import finalize
from secateurs.core.selection import name_matcher
from secateurs.core.targets import is_hf_conv1d
from secateurs.errors import PruningError
from secateurs.measure import LatencyComparison, compare_latency
from secateurs.runtime import Inputs, call_model, inference, watch_inputs

Layout = Literal["auto", "bsr", "csr"]
#: Compares named modules on the same inputs, with a number of threads and seconds of timed calls per module:
#: :func:`secateurs.measure.compare_latency` unless replaced (the seam through which tests give fixed timings).
Timer = Callable[[Mapping[str, nn.Module], Inputs, int, float], LatencyComparison]

#: Tile sides tried when reading a weight's block structure, largest first. Square only: torch's CPU BSR
#: kernel (MKL) refuses rectangular blocks, so a 16x32 block pattern runs as 16x16 tiles.
TILE_SIDES = (64, 32, 16, 8, 4, 2)
#: A BSR layout may store at most this many weights per nonzero weight (zeros inside kept tiles count);
#: beyond it the weight is not block-sparse and only CSR is tried.
MAX_FILL = 1.25
#: Seconds of timed calls per candidate kernel of one layer, and per model end to end.
LAYER_BUDGET_S = 0.2
END_TO_END_BUDGET_S = 2.0
#: Largest difference allowed between a sparse kernel's output and dense, relative to the largest output.
RELATIVE_TOLERANCE = 1e-4
#: The same for the whole model's outputs, where rounding differences add up over the layers.
OUTPUT_TOLERANCE = 1e-3
_BETA_WARNING = r"Sparse (BSR|CSR) tensor support is in beta state"


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` held in torch's BSR or CSR layout, computed as ``(b + W xᵀ)ᵀ`` (sparse times
    dense is the product torch's CPU kernels offer). ``weight`` and ``bias`` are buffers: inference only."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, blocksize: tuple[int, int] | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.blocksize = blocksize
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_BETA_WARNING, category=UserWarning)
            sparse = weight.detach().to_sparse_bsr(blocksize) if blocksize else weight.detach().to_sparse_csr()
        self.register_buffer("weight", sparse)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_module(cls, module: nn.Module, blocksize: tuple[int, int] | None) -> SparseLinear:
        """From an ``nn.Linear`` or Hugging Face ``Conv1D``; ``blocksize`` None means CSR."""
        return cls(dense_weight(module), module.bias, blocksize)

    @property
    def layout(self) -> str:
        return "bsr" if self.blocksize else "csr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = x.reshape(-1, self.in_features).t()
        if self.bias is None:
            out = self.weight @ columns
        else:
            out = torch.addmm(self.bias.unsqueeze(1), self.weight, columns)
        return out.t().reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        block = f", blocksize={self.blocksize}" if self.blocksize else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout}{block}"


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The ``[out, in]`` weight of a Linear, or of a Hugging Face ``Conv1D`` (stored ``[in, out]``)."""
    weight = module.weight.detach()
    return weight.t() if is_hf_conv1d(module) else weight


def block_structure(weight: torch.Tensor) -> tuple[int, int] | None:
    """The largest square tile whose BSR layout stores at most :data:`MAX_FILL` weights per nonzero one,
    or None when no tile of 2×2 or more does (the zeros are unstructured)."""
    nonzero = weight != 0
    count = int(torch.count_nonzero(nonzero))
    out_size, in_size = weight.shape
    for side in TILE_SIDES:
        if out_size % side or in_size % side:
            continue
        tiles = nonzero.reshape(out_size // side, side, in_size // side, side).any(dim=3).any(dim=1)
        if int(torch.count_nonzero(tiles)) * side * side <= MAX_FILL * count:
            return (side, side)
    return None


@dataclass
class LayerSwap:
    """What happened to one layer: its sparsity, the kernel chosen (``"dense"`` when kept) and why."""

    name: str
    shape: tuple[int, int]
    sparsity: float
    layout: str
    reason: str
    blocksize: tuple[int, int] | None = None
    times_ms: dict[str, float] = field(default_factory=dict)

    @property
    def sparse_ms(self) -> float | None:
        """Time of the chosen sparse kernel, or of the fastest one timed when the layer stayed dense."""
        if self.layout != "dense":
            return self.times_ms.get(self.layout)
        return min((ms for kind, ms in self.times_ms.items() if kind != "dense"), default=None)

    @property
    def speedup(self) -> float | None:
        """Dense time over the chosen sparse kernel's (None when the layer stayed dense)."""
        if self.layout == "dense" or "dense" not in self.times_ms:
            return None
        return self.times_ms["dense"] / self.times_ms[self.layout]


@dataclass
class SwapReport:
    """The swapped copy, every candidate layer's outcome, and the end-to-end latency before and after."""

    model: nn.Module
    layers: list[LayerSwap]
    threads: int
    min_speedup: float
    end_to_end: LatencyComparison | None = None

    @property
    def swapped(self) -> list[LayerSwap]:
        return [layer for layer in self.layers if layer.layout != "dense"]

    @property
    def latency_ratio(self) -> float | None:
        """Swapped model's time over the original's (median of interleaved rounds); None when nothing was swapped."""
        return None if self.end_to_end is None else self.end_to_end.ratios["block-sparse"].median

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "min_speedup": self.min_speedup,
            "swapped": len(self.swapped),
            "latency_ratio": self.latency_ratio,
            "end_to_end": None if self.end_to_end is None else self.end_to_end.to_dict(),
            "layers": [{**vars(layer), "sparse_ms": layer.sparse_ms, "speedup": layer.speedup} for layer in self.layers],
        }

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'sparsity':>8}  {'kernel':>10}  {'dense ms':>9}  {'sparse ms':>9}  reason"]
        for layer in self.layers:
            kernel = layer.layout + (f" {layer.blocksize[0]}x{layer.blocksize[1]}" if layer.layout == "bsr" else "")
            dense = layer.times_ms.get("dense")
            lines.append(
                f"{layer.name:<{width}}  {layer.sparsity:>8.1%}  {kernel:>10}  {_ms(dense):>9}  {_ms(layer.sparse_ms):>9}  "
                f"{layer.reason}"
            )
        lines.append(f"{len(self.swapped)} of {len(self.layers)} layers swapped, {self.threads} thread(s)")
        if self.end_to_end is not None:
            dense, sparse = self.end_to_end["dense"].median_ms, self.end_to_end["block-sparse"].median_ms
            noisy = " (noisy)" if self.end_to_end.noisy else ""
            lines.append(f"end to end: {dense:.2f} ms dense, {sparse:.2f} ms swapped, ratio {self.latency_ratio:.2f}{noisy}")
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _compare(models: Mapping[str, nn.Module], inputs: Inputs, threads: int, budget_s: float) -> LatencyComparison:
    return compare_latency(models, inputs, threads=threads, budget_s=budget_s)


def to_block_sparse(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    threads: int = 1,
    min_speedup: float = 1.1,
    layout: Layout = "auto",
    exclude: str | Iterable[str] = (),
    timer: Timer = _compare,
) -> SwapReport:
    """A copy of ``model`` whose sparse Linear layers run sparse kernels where they are faster here.

    ``example_inputs`` (a tuple of positional arguments or a mapping of keyword arguments) should have the
    shapes the model will serve: each layer is timed on the input it receives from them, with ``threads``
    intra-op threads. ``layout``: ``"auto"`` tries BSR (for block-sparse weights) and CSR, ``"bsr"`` or
    ``"csr"`` only that one. ``min_speedup=0`` swaps every layer a kernel can take, whatever the timing.
    ``exclude``: layer names (globs, or ``re:`` regular expressions) to leave dense. ``timer`` compares named
    modules on inputs (default :func:`~secateurs.measure.compare_latency`). The swapped copy must reproduce the
    original's outputs on the example inputs (else :class:`PruningError`); then both are timed end to end,
    interleaved, by the same timer.
    """
    _check_request(model, threads, min_speedup, layout)
    excluded = _exclusions(model, exclude)
    swapped = copy.deepcopy(model)
    finalize(swapped)
    inputs = _layer_inputs(swapped, example_inputs)
    tied = _tied_weights(swapped)
    layers = []
    for name, module, parent in linear_layers(swapped):
        if reason := _left_dense(name, module, parent, excluded, tied, inputs):
            weight = dense_weight(module)
            layers.append(LayerSwap(name, _matrix_shape(weight), _sparsity(weight), "dense", reason))
        else:
            layers.append(_swap_layer(swapped, name, module, inputs[module], layout, min_speedup, timer, threads))
    report = SwapReport(swapped, layers, threads, min_speedup)
    if report.swapped:
        _check_same_outputs(model, swapped, example_inputs)
        report.end_to_end = timer({"dense": model, "block-sparse": swapped}, example_inputs, threads, END_TO_END_BUDGET_S)
    return report


def _check_request(model: nn.Module, threads: int, min_speedup: float, layout: str) -> None:
    """Refuse a request that cannot work, before copying or running anything."""
    if not isinstance(model, nn.Module):
        raise PruningError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if layout not in ("auto", "bsr", "csr"):
        raise PruningError(f"layout={layout!r}: use 'auto' (time BSR and CSR), 'bsr' or 'csr'")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise PruningError(f"threads={threads!r}: give a whole number of intra-op threads, 1 or more")
    if not isinstance(min_speedup, (int, float)) or not min_speedup >= 0:
        raise PruningError(f"min_speedup={min_speedup!r}: give how many times faster a sparse kernel must be, 0 or more")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise PruningError("to_block_sparse times torch's CPU sparse kernels: move the model to the CPU first (model.cpu())")


def _exclusions(model: nn.Module, exclude: str | Iterable[str]) -> list[Callable[[str], bool]]:
    """Matchers of the ``exclude`` patterns; each must name at least one Linear layer of the model."""
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    names = [name for name, _, _ in linear_layers(model)]
    matchers = [name_matcher(pattern) for pattern in patterns]
    for pattern, matches in zip(patterns, matchers):
        if not any(matches(name) for name in names):
            raise PruningError(f"exclude={pattern!r} names no Linear layer; the layers are: {', '.join(names[:8])}")
    return matchers


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(name, layer, parent)`` of every ``nn.Linear`` (not subclasses) and Hugging Face ``Conv1D`` below the root."""
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    return [
        (name, module, parents[module])
        for name, module in model.named_modules()
        if module in parents and (type(module) is nn.Linear or is_hf_conv1d(module))
    ]


def _left_dense(
    name: str,
    module: nn.Module,
    parent: nn.Module,
    excluded: list[Callable[[str], bool]],
    tied: set[int],
    inputs: Mapping[nn.Module, torch.Tensor],
) -> str | None:
    """Why a layer is not even timed, or None."""
    if any(matches(name) for matches in excluded):
        return "excluded"
    if module not in inputs:
        return "not called on the example inputs"
    if not int(torch.count_nonzero(module.weight)) < module.weight.numel():
        return "no zeros"
    if id(module.weight) in tied:
        return "weight tied to another module"
    if _reads_weights_directly(parent):
        return f"held by torch's {type(parent).__name__}, which may use the weight without calling the layer"
    return None


def _reads_weights_directly(parent: nn.Module) -> bool:
    """torch's own layers holding Linears (Transformer layers, attention) use their weights without calling them."""
    return type(parent).__module__.startswith("torch.nn.modules") and not isinstance(
        parent, (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    )


def _layer_inputs(model: nn.Module, example_inputs: Inputs) -> dict[nn.Module, torch.Tensor]:
    """The input each Linear receives first when the model runs on the example inputs."""
    seen: dict[nn.Module, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module not in seen and args and isinstance(args[0], torch.Tensor):
            seen[module] = args[0].detach()

    watch_inputs(model, example_inputs, {module: record for _, module, _ in linear_layers(model)})
    return seen


def _tied_weights(model: nn.Module) -> set[int]:
    """Identities of weights held by more than one module (tied embeddings and heads)."""
    holders: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        weight = module._parameters.get("weight")
        if weight is not None:
            holders[id(weight)] = holders.get(id(weight), 0) + 1
    return {key for key, count in holders.items() if count > 1}


def _matrix_shape(weight: torch.Tensor) -> tuple[int, int]:
    out_size, in_size = weight.shape
    return out_size, in_size


def _sparsity(weight: torch.Tensor) -> float:
    return 1.0 - int(torch.count_nonzero(weight)) / weight.numel()


def _swap_layer(
    model: nn.Module,
    name: str,
    module: nn.Module,
    x: torch.Tensor,
    layout: Layout,
    min_speedup: float,
    timer: Timer,
    threads: int,
) -> LayerSwap:
    """Time the candidates of one layer and swap in the fastest sparse one if it pays; what was decided."""
    weight = dense_weight(module)
    outcome = LayerSwap(name, _matrix_shape(weight), _sparsity(weight), "dense", "", block_structure(weight))
    candidates, outcome.reason = _candidates(module, x, layout, outcome.blocksize)
    if not candidates:
        return outcome
    comparison = timer({"dense": module, **candidates}, (x,), threads, LAYER_BUDGET_S)
    outcome.times_ms = {key: comparison[key].median_ms for key in ("dense", *candidates)}
    fastest = min(candidates, key=lambda key: comparison.ratios[key].median)
    speedup = 1.0 / comparison.ratios[fastest].median
    if speedup < min_speedup:
        slower = f"{fastest} only {speedup:.2f}x dense, below min_speedup {min_speedup}"
        outcome.reason = "; ".join(filter(None, [slower, outcome.reason]))
        return outcome
    replace_module(model, module, candidates[fastest])
    outcome.layout = fastest
    outcome.reason = "; ".join(filter(None, [f"{speedup:.2f}x dense", outcome.reason]))
    return outcome


def _candidates(
    module: nn.Module, x: torch.Tensor, layout: Layout, blocksize: tuple[int, int] | None
) -> tuple[dict[str, SparseLinear], str]:
    """The sparse versions of ``module`` that compute what it does, and why the others are missing."""
    if layout == "bsr" and blocksize is None:
        return {}, "not block-sparse (no tile of 2+ weights fits its zeros); use layout='csr' or 'auto'"
    wanted = {"bsr": blocksize, "csr": None}
    if blocksize is None or layout == "csr":
        wanted.pop("bsr")
    if layout == "bsr":
        wanted.pop("csr")
    candidates, failures = {}, []
    for kind, tile in wanted.items():
        try:
            candidate = SparseLinear.from_module(module, tile)
            _check_agrees(module, candidate, x)
            candidates[kind] = candidate
        except (RuntimeError, NotImplementedError) as exc:
            failures.append(f"{kind}: {str(exc).splitlines()[0]}")
    return candidates, "; ".join(failures)


def _check_agrees(dense: nn.Module, sparse: SparseLinear, x: torch.Tensor) -> None:
    """Raise when the sparse kernel's output on ``x`` differs from dense by more than float rounding."""
    with torch.no_grad():
        expected, got = dense(x), sparse(x)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((expected - got).abs().max()) if expected.numel() else 0.0
    if error > RELATIVE_TOLERANCE * max(scale, 1.0):
        raise RuntimeError(f"sparse output differs from dense by {error:.3g} (largest output {scale:.3g})")


def _check_same_outputs(model: nn.Module, swapped: nn.Module, example_inputs: Inputs) -> None:
    """Raise when the swapped copy fails on the example inputs or its outputs differ from the original's."""
    with inference(model), inference(swapped):
        expected = _tensors(call_model(model, example_inputs))
        try:
            got = _tensors(call_model(swapped, example_inputs))
        except (RuntimeError, NotImplementedError) as exc:
            raise PruningError(
                f"the swapped model fails on the example inputs ({str(exc).splitlines()[0]}): a module uses a "
                "swapped Linear's weight without calling it; leave that layer dense with exclude=[...]"
            ) from None
    for want, have in zip(expected, got):
        error = float((want - have).abs().max()) if want.numel() else 0.0
        scale = float(want.abs().max()) if want.numel() else 0.0
        if want.shape != have.shape or error > OUTPUT_TOLERANCE * max(scale, 1.0):
            raise PruningError(
                f"the swapped model's outputs differ from the original's by {error:.3g} (largest output {scale:.3g}): "
                "a module uses a swapped Linear's weight without calling it; leave that layer dense with exclude=[...]"
            )


def _tensors(output: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a model's output (nested tuples, lists, mappings, Hugging Face outputs)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in _tensors(item)]
    return []


def replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``old`` is registered in ``model`` (a module shared by several parents included)."""
    places = [(parent, key) for parent in model.modules() for key, child in parent._modules.items() if child is old]
    for parent, key in places:
        parent._modules[key] = new
