"""Depth pruning: remove whole residual blocks (ResNet stages, MBConv blocks, transformer layers).

A block can go when it sits in an ``nn.Sequential`` or ``nn.ModuleList``, runs once, returns a tensor of
its input's shape, and adds its input to something (an identity shortcut): skipping it then leaves a
well-formed network. Blocks are scored with the criterion over all their parameters, ranked within
their container (``scope="local"``) or across the model (``"global"``), and deleted; containers are
renumbered, and ``layer_idx`` attributes and Hugging Face ``num_hidden_layers``/``layer_types`` follow.

The reference for verification is the original model with the removed blocks bypassed (a forward hook
hands their input on as their output): the shrunk model must compute exactly that, at the outputs and at
the output of every container that loses blocks and of each block it keeps (see :mod:`.verify`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from secateurs.core.amounts import Amount, amount_count, nothing_pruned, per_layer_amounts
from secateurs.core.criteria import Criterion
from secateurs.core.summary import count_params
from secateurs.core.targets import Target
from secateurs.errors import PruningError
from secateurs.structural.graph import DependencyGraph, build_graph
from secateurs.structural.hf import is_hf_model
from secateurs.structural.persist import append_step, record_structure
from secateurs.structural.report import ShrinkReport, Verification
from secateurs.structural.surgery import Undo
from secateurs.structural.verify import ActivationProbe, run_outputs, run_shrunk

#: Operations that pass a tensor through unchanged in value (what may sit between a block's input and its add).
_TRANSPARENT = ("aten.alias", "aten.view", "aten._unsafe_view", "aten.clone", "aten._to_copy", "aten.detach",
                "aten.contiguous", "aten.reshape", "aten.expand")


@dataclass
class Block:
    name: str
    container: str
    index: int
    module: nn.Module
    siblings: int  # how many modules the container holds


def removable_blocks(graph: DependencyGraph) -> list[Block]:
    """Residual blocks that can be removed, in model order."""
    named = graph.named
    calls = defaultdict(list)
    for call in graph.calls:
        calls[call.name].append(call)
    blocks = []
    for container_name, container in named.items():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)):
            continue
        for position, (key, child) in enumerate(container._modules.items()):
            name = f"{container_name}.{key}" if container_name else key
            if child is None or len(calls.get(name, [])) != 1:
                continue
            call = calls[name][0]
            if call.input is None or call.input_shape != call.output_shape or not any(True for _ in child.parameters()):
                continue
            if _adds_its_input(graph, call.start, call.end, call.input):
                blocks.append(Block(name, container_name, position, child, len(container._modules)))
    # a stage made of removable blocks is itself residual: remove its blocks, not the stage
    names = [b.name for b in blocks]
    return [b for b in blocks if not any(other.startswith(b.name + ".") for other in names)]


def _adds_its_input(graph: DependencyGraph, start: int, end: int, tensor: int) -> bool:
    aliases = {tensor}
    for name, inputs, outputs in graph.ops[start:end]:
        if not aliases & set(inputs):
            continue
        if name.startswith(("aten.add.", "aten.add_.")):
            return True
        if name.startswith(_TRANSPARENT):
            aliases.update(outputs)
    return False


def _block_scores(blocks: list[Block], criterion: Criterion, aggregate: str) -> dict[str, float]:
    scores = {}
    for block in blocks:
        parts = []
        for pname, param in block.module.named_parameters():
            module_name, _, attr = f"{block.name}.{pname}".rpartition(".")
            target = Target(module_name, attr, block.module.get_submodule(module_name[len(block.name) + 1:]) if module_name != block.name else block.module)
            s = criterion.score(param.detach(), target).float().reshape(-1)
            parts.append(float(criterion.reduce(s, (0,))))
        total = sum(parts)
        scores[block.name] = total / len(parts) if aggregate == "mean" and parts else total
    return scores


def plan_depth(blocks: list[Block], scores: Mapping[str, float], amount: Amount, scope: str,
               per_layer: Mapping[str, Amount] | None) -> list[Block]:
    """Blocks to remove. Local: each container loses ``amount`` of its removable blocks and keeps at least
    one block; global: the lowest-scored ``amount`` of all removable blocks (scores relative to their
    container's mean, so stages of different widths compare fairly)."""
    by_container: dict[str, list[Block]] = defaultdict(list)
    for block in blocks:
        by_container[block.container].append(block)
    names = {container: [container] for container in by_container}
    overrides = per_layer_amounts(per_layer, names, what="container of removable blocks", whole=False)
    chosen: list[Block] = []
    if scope == "local":
        for container, members in by_container.items():
            k = min(amount_count(overrides.get(container, amount), len(members)), len(members), members[0].siblings - 1)
            chosen.extend(sorted(members, key=lambda b: (scores[b.name], b.index))[:k])
        return chosen
    if scope != "global":
        raise PruningError(f"scope must be 'local' or 'global', got {scope!r}")
    relative = {}
    for container, members in by_container.items():
        mean = sum(scores[b.name] for b in members) / len(members)
        for b in members:
            relative[b.name] = scores[b.name] / mean if mean > 0 else scores[b.name]
    k = amount_count(amount, len(blocks))
    left = {c: m[0].siblings for c, m in by_container.items()}
    for block in sorted(blocks, key=lambda b: (relative[b.name], b.name)):
        if len(chosen) >= k:
            break
        if left[block.container] > 1:
            chosen.append(block)
            left[block.container] -= 1
    return chosen


@contextlib.contextmanager
def bypassed(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Each module's output replaced by its first input (the reference for removing it)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        leaves, spec = tree_flatten(output)
        x = next(t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
        index = next(i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor))
        leaves[index] = x
        return tree_unflatten(leaves, spec)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def remove_blocks(model: nn.Module, named: Mapping[str, nn.Module], blocks: list[Block], undo: Undo) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Delete blocks, renumber containers and ``layer_idx``; update HF layer counts. Returns (attrs, config)."""
    by_container: dict[str, set[int]] = defaultdict(set)
    for block in blocks:
        by_container[block.container].add(block.index)
    attrs: dict[str, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    hf_config = model.config if is_hf_model(model) else None
    for container_name, indices in by_container.items():
        container = named[container_name]
        old = container._modules
        before = len(old)
        kept = [(k, m) for i, (k, m) in enumerate(old.items()) if i not in indices]
        numbered = all(k.isdigit() for k in old)  # ModuleList / plain Sequential: renumber like del does
        new = OrderedDict((str(i) if numbered else k, m) for i, (k, m) in enumerate(kept))
        undo.set_attr(container, "_modules", new)
        for i, (key, child) in enumerate(new.items()):
            for sub_name, sub in child.named_modules():
                if isinstance(getattr(sub, "layer_idx", None), int) and sub.layer_idx != i:
                    undo.set_attr(sub, "layer_idx", i)
                    path = ".".join(p for p in (container_name, key, sub_name) if p)
                    attrs.setdefault(path, {})["layer_idx"] = i
        if hf_config is not None and getattr(hf_config, "num_hidden_layers", None) == before:
            undo.set_attr(hf_config, "num_hidden_layers", len(kept))
            config["num_hidden_layers"] = len(kept)
            layer_types = getattr(hf_config, "layer_types", None)
            if isinstance(layer_types, list) and len(layer_types) == before:
                new_types = [t for i, t in enumerate(layer_types) if i not in indices]
                undo.set_attr(hf_config, "layer_types", new_types)
                config["layer_types"] = new_types
    return attrs, config


def _not_excluded(blocks: list[Block], exclude: Iterable[str | nn.Module] | None) -> list[Block]:
    """Blocks that no ``exclude`` entry names: a module, or a glob matching the block or a module inside it."""
    excluded = list(exclude or [])

    def named(block: Block, entry: str | nn.Module) -> bool:
        if isinstance(entry, str):
            return fnmatch.fnmatchcase(block.name, entry) or fnmatch.fnmatchcase(block.name, entry + ".*")
        return entry is block.module

    return [b for b in blocks if not any(named(b, entry) for entry in excluded)]


def shrink_depth(model: nn.Module, example_inputs: Any, amount: Amount, *, criterion: Criterion, scope: str,
                 exclude: Iterable[str | nn.Module] | None, per_layer: Mapping[str, Amount] | None, aggregate: str,
                 strict: bool, verify: bool, atol: float | None, start: float, label: str,
                 allow_noop: bool = False) -> ShrinkReport:
    """``shrink(granularity="layer")``: remove the lowest-scored removable blocks, verify, and report."""
    graph = build_graph(model, example_inputs, strict=strict)
    blocks = _not_excluded(removable_blocks(graph), exclude)
    if not blocks:
        raise PruningError(
            f"no removable blocks in {type(model).__name__}: depth pruning removes residual blocks (a module in a "
            "Sequential/ModuleList whose output has its input's shape and adds its input back)"
        )
    chosen = plan_depth(blocks, _block_scores(blocks, criterion, aggregate), amount, scope, per_layer)
    if not chosen and not allow_noop:
        sizes = Counter(b.container for b in blocks).values()
        raise nothing_pruned(amount, "block", sum(sizes) if scope == "global" else max(sizes))
    params_before, macs_before = count_params(model), graph.macs
    probe, reference = _bypassed_reference(model, example_inputs, graph.named, chosen, atol) if verify else (None, [])
    undo = Undo()
    try:
        attrs, config = remove_blocks(model, graph.named, chosen, undo)
        outputs, macs_after = run_shrunk(model, example_inputs, _failed_after_removal, probe)
        check = probe.conclude(reference, outputs, "removing blocks differs from bypassing them") if probe else Verification()
        removed = [b.name for b in sorted(chosen, key=lambda b: (b.container, -b.index))]  # later ones first
        structure = record_structure(model, attrs, config, removed=removed)
    except BaseException:
        undo.rollback()
        raise
    append_step(model, structure)
    return ShrinkReport(
        granularity="layer", method=label, scope=scope,
        amount=amount, params_before=params_before, params_after=count_params(model), macs_before=macs_before,
        macs_after=macs_after, **asdict(check), seconds=time.perf_counter() - start,
        removed_layers=[b.name for b in chosen], patched_modules=sorted(attrs), warnings=list(graph.warnings),
        structure=structure,
    )


def _bypassed_reference(model: nn.Module, example_inputs: Any, named: Mapping[str, nn.Module], chosen: list[Block],
                        atol: float | None) -> tuple[ActivationProbe, list[torch.Tensor]]:
    """The outputs with the chosen blocks bypassed, and a probe holding the outputs of every container that
    loses blocks and of the blocks it keeps: where removing must equal bypassing."""
    removed = {id(b.module) for b in chosen}
    points = {}
    for container in dict.fromkeys(b.container for b in chosen):
        if container:
            points[container] = named[container]
        for key, child in named[container]._modules.items():
            if child is not None and id(child) not in removed:
                points[f"{container}.{key}" if container else key] = child
    probe = ActivationProbe(points, atol=atol)
    with bypassed([b.module for b in chosen]):
        reference, _ = run_outputs(model, example_inputs, probe.recording())
    return probe, reference


def _failed_after_removal(where: str, exc: Exception) -> Exception:
    return PruningError(f"after removing blocks the model fails in {where!r} ({type(exc).__name__}: {exc}); "
                        "the model was restored")
