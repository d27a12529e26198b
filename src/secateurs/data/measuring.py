"""Measuring a dense model on calibration data: input statistics from full forward passes, gradient
statistics, block influence, and the criterion that ranks the units :func:`secateurs.shrink` removes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.core.criteria import Criterion
from secateurs.core.targets import is_linear_like
from secateurs.data.allocation import InfluenceMeter
from secateurs.data.calibration import Calibration, CalibrationSource, load_calibration
from secateurs.data.criteria import BlockInfluence
from secateurs.data.gradients import LossFn, accumulate_gradients
from secateurs.data.methods import DataMethod, Needs, available_methods, get_method
from secateurs.data.sequential import block_stack, walk_blocks
from secateurs.data.statistics import InputStatistics, gather_input_statistics
from secateurs.errors import PruningError, UnsupportedOperationError


def collect_input_statistics(
    model: nn.Module,
    calibration: CalibrationSource,
    modules: Iterable[nn.Module] | None = None,
    *,
    gram: bool = False,
    **calibration_options: Any,
) -> InputStatistics:
    """Input statistics of ``modules`` (default: every Linear-like layer) from full forward passes of the
    *dense* model: simple, not sequential. For use with ``secateurs.prune(..., method="wanda", stats=...)``."""
    data = load_calibration(calibration, model, **calibration_options)
    chosen = list(modules) if modules is not None else _linear_layers(model)
    return gather_input_statistics(model, data, chosen, gram=gram)


def _linear_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if is_linear_like(module)]


def dense_evidence(
    needs: Needs,
    model: nn.Module,
    data: Calibration | None,
    params: Sequence[torch.Tensor],
    loss_fn: LossFn | None = None,
) -> Any:
    """What ``needs`` asks for, from full passes of the dense model: input statistics of every Linear-like
    layer, or gradient statistics of ``params``; ``None`` for a method that reads no data."""
    if needs is Needs.NOTHING:
        return None
    if needs is Needs.GRADIENTS:
        return accumulate_gradients(model, data, params, loss_fn)  # type: ignore[arg-type]
    gram = needs is Needs.HESSIAN
    return gather_input_statistics(model, data, _linear_layers(model), gram=gram)  # type: ignore[arg-type]


def block_influence(
    model: nn.Module,
    calibration: CalibrationSource,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    **calibration_options: Any,
) -> dict[str, float]:
    """``1 − cos(input, output)`` of each block's hidden states over calibration tokens, keyed by
    block name (lowest first = the first candidates for depth pruning)."""
    if block_stack(model).whole_model:
        raise UnsupportedOperationError(
            f"{type(model).__name__} has no stack of repeated blocks, so no blocks to rank by influence; "
            "rank channels instead (granularity='channel')"
        )
    data = load_calibration(calibration, model, **calibration_options)
    influence: dict[str, float] = {}
    for step in walk_blocks(model, data, device=device, progress=progress, desc="block influence"):
        meter = InfluenceMeter()
        step.advance(observe=meter)
        influence[step.name] = meter.value
    return dict(sorted(influence.items(), key=lambda item: item[1]))


def unit_criterion(
    model: nn.Module,
    calibration: CalibrationSource,
    method: str,
    *,
    granularity: str = "channel",
    tokenizer: Any = None,
    num_samples: int | None = None,
    seq_len: int | None = None,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    progress: bool = False,
) -> Criterion:
    """A criterion that ranks the units :func:`secateurs.shrink` removes, measured on calibration data:
    block influence for ``granularity="layer"``, else the method's own scores of each unit. The calibration
    options are those of :func:`~secateurs.data.load_calibration`."""
    chosen = _unit_ranking_method(method, granularity)
    options = {"tokenizer": tokenizer, "num_samples": num_samples, "seq_len": seq_len, "seed": seed,
               "input_shape": input_shape}  # fmt: skip
    if granularity == "layer":
        return BlockInfluence(block_influence(model, calibration, progress=progress, **options))
    data = load_calibration(calibration, model, **options)
    return chosen.unit_criterion(dense_evidence(chosen.needs, model, data, list(model.parameters())))


def _unit_ranking_method(method: str, granularity: str) -> DataMethod:
    """The method, once it is known to rank units of ``granularity``: checked before any data runs."""
    if method not in available_methods():
        raise PruningError(f"unknown data-aware method {method!r}; choose one of {available_methods()}")
    chosen = get_method(method)
    rankers = [name for name in available_methods() if get_method(name).ranks_units]
    if not chosen.ranks_units:
        raise PruningError(
            f"{method} prunes weights inside rows and ranks no units; to remove units use one of {rankers}"
        )
    if granularity == "layer" and not chosen.needs.reads_inputs:
        readers = [name for name in rankers if get_method(name).needs.reads_inputs]
        raise PruningError(
            f"layers are ranked by block influence, which reads block inputs: use one of {readers} for layers"
        )
    return chosen
