"""Per-layer input statistics gathered by forward hooks while calibration data flows through a model.

For each watched layer: the number of tokens seen, the sum of squares of every input feature (Wanda's
‖X_j‖₂, activation scores of neurons and heads) and, on request, the Gram matrix ``Σ x xᵀ`` (SparseGPT's
Hessian, up to a constant). Padding is skipped when the batch says which tokens are real. Layers fed
the very same input tensor (query/key/value, gate/up) share one Gram product per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from secateurs.core.targets import is_hf_conv1d
from secateurs.data.calibration import Batch
from secateurs.errors import PruningError, UnsupportedOperationError
from secateurs.runtime import eval_mode


@dataclass
class _Entry:
    count: int = 0
    sq_sum: torch.Tensor | None = None
    gram: torch.Tensor | None = None


def _features_last(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer input with features on the last dimension: convolutions carry channels on dim 1."""
    if isinstance(module, nn.modules.conv._ConvNd) and x.dim() >= 3:
        return x.movedim(1, -1)
    return x


class InputStatistics:
    """Statistics of the inputs of chosen layers, keyed by the layer object itself."""

    def __init__(self, gram: bool = False, *, read_once: bool = False) -> None:
        self.gram = gram
        #: :meth:`hessian` hands each layer's Gram matrix over and forgets the layer: for a prune that reads
        #: each Hessian once, so that a block's Hessians go one by one, and none is copied.
        self.read_once = read_once
        self._entries: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._token_mask: torch.Tensor | None = None
        #: (input tensor, token mask, rows, Σx², Σxxᵀ) of the latest hooked call, reused by layers fed the same input
        self._last: tuple | None = None

    # -- gathering -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def watch(self, modules: Iterable[nn.Module]) -> Iterator[InputStatistics]:
        """Hook ``modules`` for the duration of the ``with`` block."""
        handles = []
        try:
            for module in modules:
                if self.gram and isinstance(module, nn.modules.conv._ConvNd):
                    raise UnsupportedOperationError(
                        f"{type(module).__name__}: a Hessian over convolution inputs is not implemented; "
                        "use wanda or magnitude for convolutions, or exclude them"
                    )
                self._entries.setdefault(module, _Entry())
                handles.append(module.register_forward_hook(self._hook))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._last = None

    @contextlib.contextmanager
    def tokens(self, token_mask: torch.Tensor | None) -> Iterator[None]:
        """Inside the block, layer inputs shaped ``[batch, seq, ...]`` count only positions where the mask is True."""
        previous, self._token_mask = self._token_mask, token_mask
        try:
            yield
        finally:
            self._token_mask = previous

    def _rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = _features_last(module, x.detach())
        mask = self._token_mask
        if mask is not None and x.dim() >= 3 and tuple(x.shape[:2]) == tuple(mask.shape) and not bool(mask.all()):
            x = x[mask.to(x.device)]
        return x.reshape(-1, x.shape[-1]).float()

    def _hook(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        raw = inputs[0]
        last = self._last
        if last is not None and last[0] is raw and last[1] is self._token_mask:
            _, _, n, sq, gram = last
        else:
            rows = self._rows(module, raw)
            n = rows.shape[0]
            sq = rows.square().sum(dim=0)
            gram = rows.T @ rows if self.gram else None
            self._last = (raw, self._token_mask, n, sq, gram)
        entry: _Entry = self._entries[module]
        entry.count += n
        entry.sq_sum = sq.clone() if entry.sq_sum is None else entry.sq_sum.add_(sq)
        if gram is not None:
            entry.gram = gram.clone() if entry.gram is None else entry.gram.add_(gram)

    # -- reading ---------------------------------------------------------------------------------------
    def _entry(self, module: nn.Module, name: str = "") -> _Entry:
        entry = self._entries.get(module)
        if entry is None or entry.count == 0:
            label = name or type(module).__name__
            raise PruningError(
                f"no calibration statistics for {label}: it saw no input. Data-aware criteria need "
                "calibration data run through the layer (secateurs.prune_with_data does it)"
            )
        return entry

    def __contains__(self, module: nn.Module) -> bool:
        entry = self._entries.get(module)
        return entry is not None and entry.count > 0

    def count(self, module: nn.Module) -> int:
        return self._entries[module].count if module in self._entries else 0

    def input_norm(self, module: nn.Module, name: str = "") -> torch.Tensor:
        """‖X_j‖₂ over every calibration token, one value per input feature."""
        return self._entry(module, name).sq_sum.sqrt()

    def input_rms(self, module: nn.Module, name: str = "") -> torch.Tensor:
        """Root mean square of each input feature: comparable across layers that saw different token counts."""
        entry = self._entry(module, name)
        return (entry.sq_sum / entry.count).sqrt()

    def hessian(self, module: nn.Module, name: str = "") -> torch.Tensor:
        """``X Xᵀ / n``: the layer-wise reconstruction Hessian, up to the constant 2, in a tensor the caller
        may overwrite. With ``read_once`` it is the gathered matrix itself, scaled in place, and the layer's
        statistics are gone (at d = 11008 a copy would be another 485 MB)."""
        entry = self._entry(module, name)
        if entry.gram is None:
            raise PruningError("these statistics were gathered without gram=True; SparseGPT needs the Hessian")
        if not self.read_once:
            return entry.gram / entry.count
        del self._entries[module]
        return entry.gram.div_(entry.count)

    def release(self, modules: Iterable[nn.Module]) -> None:
        """Free the statistics of layers that are done with."""
        for module in modules:
            self._entries.pop(module, None)


def gather_input_statistics(
    model: nn.Module, calibration: Iterable[Batch], modules: Iterable[nn.Module], gram: bool = False
) -> InputStatistics:
    """Input statistics of ``modules`` from full forward passes of ``model`` (in eval mode) over ``calibration``."""
    stats = InputStatistics(gram=gram)
    with eval_mode(model), stats.watch(modules), torch.no_grad():
        for batch in calibration:
            with stats.tokens(batch.token_mask):
                batch.run(model)
    return stats


def input_shape_for(module: nn.Module, param: torch.Tensor, values: torch.Tensor, in_dim: int) -> torch.Tensor:
    """``values`` (one per input feature) viewed to broadcast against ``param`` along ``in_dim``."""
    if values.numel() != param.shape[in_dim]:
        kind = "HF Conv1D" if is_hf_conv1d(module) else type(module).__name__
        raise PruningError(
            f"{kind} weight has {param.shape[in_dim]} inputs but its statistics {values.numel()}; "
            "grouped convolutions are not supported by data-aware criteria"
        )
    view = [1] * param.dim()
    view[in_dim] = -1
    return values.view(view)
