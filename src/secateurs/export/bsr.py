"""``bsr``: the Linear layers that run faster here as torch BSR (or CSR) tensors, in files plain PyTorch loads.

``torch.export`` cannot save a program holding sparse tensors, so the format writes what it takes to rebuild
the fast model instead: the folded state dict (``model.bsr.safetensors``) and, in ``export.json``, the
plain-PyTorch lines that load it into the architecture and convert each listed layer with
``Tensor.to_sparse_bsr(blocksize)`` (or ``to_sparse_csr()``). Which layers are listed is the swap's decision
(:func:`~secateurs.export.sparse.to_block_sparse`): only those a sparse kernel ran faster than dense on this
machine, on the layer's real input from the example inputs; the manifest keeps every layer's timing and reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
from torch import nn

from secateurs.export.formats import Check, ExportError, ExportFormat, UnsupportedFormatError, Written, register_format
from secateurs.export.manifest import read_export_manifest
from secateurs.export.prepare import deployable_copy, float_bound, max_abs_diff, reference_outputs
from secateurs.export.sparse import (
    Layout,
    SparseLinear,
    SwapReport,
    Timer,
    linear_layers,
    replace_module,
    to_block_sparse,
)
from secateurs.runtime import Inputs, call_model, inference
from secateurs.sources import load_model
from secateurs.storage import write_weights

BSR_WEIGHTS_FILE = "model.bsr.safetensors"

#: The plain-PyTorch module the load lines define: what :class:`~secateurs.export.sparse.SparseLinear` computes.
_SPARSE_LINEAR_TEXT = '''import safetensors.torch
import torch


class SparseLinear(torch.nn.Module):
    """y = x W^T + b with W in torch's BSR layout (blocksize given) or CSR (blocksize None)."""

    def __init__(self, weight, bias, blocksize):
        super().__init__()
        self.weight = weight.to_sparse_bsr(blocksize) if blocksize else weight.to_sparse_csr()
        self.bias = bias

    def forward(self, x):
        columns = x.reshape(-1, x.shape[-1]).t()
        out = self.weight @ columns if self.bias is None else torch.addmm(self.bias.unsqueeze(1), self.weight, columns)
        return out.t().reshape(*x.shape[:-1], -1)

'''

_CONVERT_TEXT = '''
for name, blocksize in SPARSE_LAYERS.items():
    layer = model.get_submodule(name)
    weight = layer.weight.detach()
    weight = weight if isinstance(layer, torch.nn.Linear) else weight.t()  # Hugging Face Conv1D stores [in, out]
    bias = None if layer.bias is None else layer.bias.detach()
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, SparseLinear(weight, bias, blocksize))
'''


def load_text(converted: Mapping[str, tuple[int, int] | None], strict: bool) -> str:
    """The Python that rebuilds the fast model without secateurs, given ``model``, the architecture."""
    layers = json.dumps({name: list(block) if block else None for name, block in converted.items()}, indent=4)
    load = (
        f"model.load_state_dict(safetensors.torch.load_file({BSR_WEIGHTS_FILE!r}){'' if strict else ', strict=False'})"
        "  # model: the architecture, built with the pruned sizes"
    )
    return f"{_SPARSE_LINEAR_TEXT}{load}\nSPARSE_LAYERS = {layers.replace('null', 'None')}{_CONVERT_TEXT}"


def load_block_sparse(model: nn.Module, directory: str | Path) -> nn.Module:
    """``model`` (the architecture, pruned sizes) with the ``bsr`` export's weights of ``directory`` loaded and its
    listed layers converted to :class:`SparseLinear`, in eval mode; what the manifest's lines build, by secateurs."""
    directory = Path(directory)
    written = read_export_manifest(directory).formats.get(BlockSparse.name)
    if written is None:
        raise ExportError(f"{directory} holds no bsr export; write one with export(..., formats=['bsr'])")
    return _rebuild(model, directory / BSR_WEIGHTS_FILE, written.details["converted"], written.details["strict"])


def _rebuild(model: nn.Module, weights: Path, converted: Mapping[str, Sequence[int] | None], strict: bool) -> nn.Module:
    """``model`` with the weights file loaded and the listed layers converted: what the load lines do."""
    model.load_state_dict(safetensors.torch.load_file(weights), strict=strict)
    for name, block in converted.items():
        layer = model.get_submodule(name)
        replace_module(model, layer, SparseLinear.from_module(layer, (block[0], block[1]) if block else None))
    return model.eval()


@register_format("bsr")
@dataclass
class BlockSparse(ExportFormat):
    summary = "Linear layers faster here as torch BSR/CSR tensors: folded weights + the lines that convert them"
    #: Intra-op threads the layers are timed on (the deployment's), and how much faster a kernel must be.
    threads: int = 1
    min_speedup: float = 1.1
    #: ``"auto"`` (BSR for block-sparse weights, else CSR, whichever is faster), ``"bsr"`` or ``"csr"``.
    layout: Layout = "auto"
    #: Compares the candidate kernels (None: :func:`secateurs.measure.compare_latency`); tests give fixed timings.
    timer: Timer | None = None

    def check(self, model: nn.Module) -> None:
        super().check(model)
        if not linear_layers(model):
            raise UnsupportedFormatError(
                f"the bsr format converts Linear layers and {type(model).__name__} has none; "
                "use safetensors, torch-export or onnx"
            )

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        timing = {"timer": self.timer} if self.timer else {}
        swap = to_block_sparse(model, example_inputs, threads=self.threads, min_speedup=self.min_speedup,
                               layout=self.layout, **timing)  # fmt: skip
        converted = {layer.name: layer.blocksize if layer.layout == "bsr" else None for layer in swap.swapped}
        state = model.state_dict()
        write_weights(state, directory / BSR_WEIGHTS_FILE, "dense")
        strict = len(safetensors.torch.load_file(directory / BSR_WEIGHTS_FILE)) == len(state)
        details = {"converted": converted, "strict": strict, "swap": swap.to_dict() | {"text": str(swap)}}
        check = self._check(model, example_inputs, directory, converted, strict)
        return Written({BSR_WEIGHTS_FILE: load_text(converted, strict)}, check, [self._summary(swap)], details)

    def _summary(self, swap: SwapReport) -> str:
        """One line: what was converted and what it gave end to end, or why every layer stayed dense."""
        timed = f"timed on {self.threads} thread(s)"
        if not swap.swapped:
            slower = sum(1 for layer in swap.layers if layer.times_ms)
            return (
                f"no layer faster: kept dense ({slower} of {len(swap.layers)} Linear layers timed slower than "
                f"min_speedup {self.min_speedup}x dense, the others not sparse or not convertible; {timed})"
            )
        kinds = {kind: sum(1 for layer in swap.swapped if layer.layout == kind) for kind in ("bsr", "csr")}
        ratio = f"; end to end {swap.latency_ratio:.2f}x the dense time" if swap.latency_ratio is not None else ""
        return (
            f"{len(swap.swapped)} of {len(swap.layers)} Linear layers converted ({kinds['bsr']} BSR, {kinds['csr']} "
            f"CSR), {timed}{ratio}"
        )

    def _check(
        self, model: nn.Module, inputs: Inputs, directory: Path, converted: Mapping[str, Sequence[int] | None],
        strict: bool,
    ) -> Check:  # fmt: skip
        """Rebuild the fast model from the written file as the load lines do, and compare it with ``model``."""
        rebuilt = _rebuild(deployable_copy(model), directory / BSR_WEIGHTS_FILE, converted, strict)
        with inference(rebuilt):
            diff, scale = max_abs_diff(reference_outputs(model, inputs), call_model(rebuilt, inputs))
        check = Check(diff, scale, float_bound(scale))
        if diff > check.bound:
            raise ExportError(
                f"the rebuilt block-sparse model differs from the model by {diff:.3g} (bound {check.bound:.3g})"
            )
        return check

    def load(self, directory: Path, threads: int | None = None) -> nn.Module | None:
        """The fast model, rebuilt on the architecture of the export's source (None when the export was made from
        a module, whose architecture only the caller has: use :func:`load_block_sparse`)."""
        source = read_export_manifest(directory).source
        if not source.get("spec"):
            return None
        loaded = load_model(source["spec"], input_shape=source.get("input_shape"), check=False)
        return load_block_sparse(deployable_copy(loaded.model), directory)
