"""Whole residual blocks as the units of an allocation (``shrink(granularity="layer")``).

A block is kept or dropped: its levels are amount 0 (kept) and 1 (dropped). What dropping it saves is what
it carries: its parameters, its bytes, its MACs (``FlopCounterMode``, per module), or its time (each block's
call timed alone on the inputs it gets inside the model, interleaved with the whole model, by
:func:`secateurs.analysis.latency_table.block_latencies`). Those add up exactly for parameters, bytes and
MACs; latency is predicted and then measured by :func:`secateurs.analysis.allocate`.

``shrink`` never empties a container (a ``Sequential`` or ``ModuleList``), so a container made only of
removable blocks keeps one: dropping its last block is priced as impossible (infinite cost).

**The proxy** for blocks is their *influence* on ``example_inputs``, ``1 - cos(input, output)`` of each
sample's hidden state (flattened), from one forward pass: a block that hardly turns the residual stream
costs little to drop (ShortGPT's block influence). Its squared relative change is ``2 x influence`` for a
block that keeps the norm, so influences add up as the squared shares of the other granularities' proxy do.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from secateurs.analysis.costs import CostModel, Term, module_macs
from secateurs.analysis.result import exact_pattern
from secateurs.core.selection import name_matcher
from secateurs.core.summary import count_params
from secateurs.errors import PruningError
from secateurs.measure import size_on_disk
from secateurs.runtime import call_model, inference
from secateurs.structural.depth import Block


def not_excluded(blocks: list[Block], exclude: Iterable[str] | None) -> list[Block]:
    """The blocks that no ``exclude`` pattern names (the block, or a module inside it), as ``shrink`` reads them."""
    matchers = [name_matcher(pattern) for pattern in exclude or ()]
    inside = lambda block: [f"{block.name}.{n}" if n else block.name for n, _ in block.module.named_modules()]
    return [b for b in blocks if not any(m(name) for m in matchers for name in inside(b))]


def block_influences(model: nn.Module, example_inputs: Any, blocks: Sequence[Block]) -> list[float]:
    """Each block's influence on ``example_inputs`` (see the module docstring), in the order of ``blocks``."""
    seen: dict[str, float] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            given = next(t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
            made = next(t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor))
            cos = nn.functional.cosine_similarity(given.float().flatten(1), made.float().flatten(1), dim=1)
            seen[name] = 1.0 - float(cos.mean())
        return record

    handles = [b.module.register_forward_hook(hook(b.name), with_kwargs=True) for b in blocks]
    try:
        with inference(model):
            call_model(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [max(seen[b.name], 0.0) for b in blocks]


def block_costs(kind: str, model: nn.Module, example_inputs: Any, blocks: Sequence[Block]) -> tuple[float, list[float]]:
    """The dense model's ``params``, ``macs`` or ``size`` (bytes), and what each block carries of it."""
    if kind == "params":
        return float(count_params(model)), [float(count_params(b.module)) for b in blocks]
    if kind == "macs":
        total, by_module = module_macs(model, example_inputs)
        return float(total), [float(by_module.get(b.name, 0)) for b in blocks]
    if kind == "size":
        bytes_of = lambda module: sum(t.numel() * t.element_size() for t in module.state_dict().values())
        return float(size_on_disk(model).dense_bytes), [float(bytes_of(b.module)) for b in blocks]
    raise PruningError(f"no cost model for target {kind!r} over whole blocks")


def block_cost_model(kind: str, dense: float, carried: Sequence[float], blocks: Sequence[Block]) -> CostModel:
    """The cost as a function of which blocks are kept (1) or dropped (0): ``dense`` less what the dropped ones
    carry, with one term per container, infinite where the container would be left empty."""
    by_container: dict[str, list[int]] = defaultdict(list)
    for index, block in enumerate(blocks):
        by_container[block.container].append(index)
    terms = []
    for members in by_container.values():
        others = blocks[members[0]].siblings - len(members)  # modules that stay whatever is chosen
        terms.append(Term(tuple(members), _container_cost([carried[u] for u in members], others > 0)))
    return CostModel(kind, dense, dense - sum(carried), terms)


def _container_cost(carried: list[float], never_empty: bool) -> Callable[[tuple[int, ...]], float]:
    def value(kept: tuple[int, ...]) -> float:
        if not never_empty and not any(kept):
            return math.inf
        return sum(c * k for c, k in zip(carried, kept))

    return value


def shrink_arguments(blocks: Sequence[Block], dropped: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """``per_layer`` and ``exclude`` with which ``shrink(model, x, 0, granularity="layer", ...)`` drops exactly the
    ``dropped`` blocks: every other block excluded, each container losing blocks given their count."""
    gone = set(dropped)
    per_container: dict[str, int] = defaultdict(int)
    for block in blocks:
        if block.name in gone:
            per_container[block.container] += 1
    per_layer = {exact_pattern(container): count for container, count in per_container.items()}
    return per_layer, [b.name for b in blocks if b.name not in gone]  # shrink reads exclude as globs of names
