"""Run calibration data through a model one repeated block at a time.

Transformers are a stem (embeddings), a stack of identical blocks, and a head. :func:`walk_blocks`
runs the stem once per calibration batch, catches what enters the first block (hidden states plus
every extra argument: attention masks, rotary position embeddings, position ids) and stops there.
Then, block after block, it hands the caller that block with its inputs (to gather statistics and
prune), and afterwards runs the (pruned) block to turn its inputs into the next block's inputs,
batch by batch, in place. Peak memory is one block plus one set of hidden states plus one batch,
whatever the depth; :class:`ActivationMeter` counts it.

Blocks are found by structure, not by model name: the ModuleList of same-type modules holding the
most parameters (``encoder.layer`` in BERT/ViT, ``h`` in GPT-2, ``layers`` in LLaMA). A model without
such a stack (a small CNN such as the demo's) is walked as one block, the whole model: its statistics
come from one full pass over the calibration batches, with the same API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.data.calibration import Calibration, hf_config
from secateurs.errors import UnsupportedOperationError
from secateurs.runtime import eval_mode, move_to

Observer = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]
#: Visits a model's blocks with their calibration inputs: :func:`walk_blocks`'s signature.
BlockWalker = Callable[..., Iterator["BlockStep"]]


#: The name of the single block of a model walked whole (one without a stack of repeated blocks).
WHOLE_MODEL = "model"


def _repeated_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of at least two same-type modules with the most parameters, if there is one."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size and (best is None or size > best[0]):
            best = (size, name, module)
    if best is None:
        return None
    _check_uniform_arguments(model, best[2])
    return best[1], best[2]


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(name, blocks)``: the ModuleList of at least two same-type modules with the most parameters."""
    found = _repeated_blocks(model)
    if found is None:
        raise UnsupportedOperationError(
            f"{type(model).__name__} has no ModuleList of repeated blocks (a stack of identical blocks, such "
            "as transformer layers)"
        )
    return found


@dataclass(frozen=True)
class BlockStack:
    """The blocks a walk visits: the model's repeated blocks (``name``: the ModuleList's path), or for a
    model without them the whole model as one block (``whole_model``)."""

    name: str
    blocks: Sequence[nn.Module]
    whole_model: bool = False

    def block_name(self, index: int) -> str:
        if self.whole_model:
            return WHOLE_MODEL
        return f"{self.name}.{index}" if self.name else str(index)

    def index_of(self, module_name: str) -> int | None:
        """The index of the block holding the module called ``module_name``; ``None`` outside every block."""
        if self.whole_model:
            return 0
        prefix = f"{self.name}." if self.name else ""
        if not module_name.startswith(prefix):
            return None
        head = module_name[len(prefix) :].split(".", 1)[0]
        return int(head) if head.isdigit() and int(head) < len(self.blocks) else None


def block_stack(model: nn.Module) -> BlockStack:
    """The model's repeated blocks, or the whole model as a single block when it has none."""
    found = _repeated_blocks(model)
    if found is None:
        return BlockStack("", (model,), whole_model=True)
    return BlockStack(*found)


def _check_uniform_arguments(model: nn.Module, blocks: nn.ModuleList) -> None:
    """Blocks are replayed with the arguments block 0 received; refuse stacks that vary them per block
    (models alternating sliding-window and full attention give each kind its own mask)."""
    kinds = {getattr(module, "attention_type", None) for block in blocks for module in block.modules()}
    kinds |= set(getattr(hf_config(model), "layer_types", None) or ())
    kinds.discard(None)
    if len(kinds) > 1:
        raise UnsupportedOperationError(
            f"the blocks mix attention types {sorted(map(str, kinds))}: each receives its own mask, "
            "so they cannot be replayed with the first block's arguments; this model is not supported yet"
        )


@dataclass
class BlockInput:
    """What one calibration batch passes to a block."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    token_mask: torch.Tensor | None

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def with_hidden(self, hidden: torch.Tensor) -> None:
        if self.args:
            self.args = (hidden, *self.args[1:])
        else:
            self.kwargs["hidden_states"] = hidden


def _hidden_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise UnsupportedOperationError(f"cannot find hidden states in a block output of type {type(output).__name__}")


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


class ActivationMeter:
    """Bytes of activations the walk holds (hidden states and block arguments), now and at peak."""

    def __init__(self) -> None:
        self.held = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def remove(self, nbytes: int) -> None:
        self.held -= nbytes

    @staticmethod
    def size(*values: Any) -> int:
        seen: set[tuple[int, int]] = set()
        total = 0
        for value in values:
            for tensor in _tensors(value):
                key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
                if key not in seen:
                    seen.add(key)
                    total += key[1]
        return total


class _Stop(Exception):
    """Raised inside the first block to end a forward pass once its inputs are caught."""


def capture_inputs(
    model: nn.Module,
    first_block: nn.Module,
    calibration: Calibration,
    device: torch.device | str | None = None,
    meter: ActivationMeter | None = None,
) -> list[BlockInput]:
    """What enters ``first_block`` for each calibration batch; the rest of the model never runs."""
    caught: list[BlockInput] = []
    current: dict[str, Any] = {}

    def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        for cache_name in ("past_key_values", "past_key_value", "layer_past"):
            if kwargs.get(cache_name) is not None:
                kwargs[cache_name] = None
        item = BlockInput(tuple(args), kwargs, current["mask"])
        if device is not None:
            item = BlockInput(move_to(item.args, device), move_to(item.kwargs, device), move_to(item.token_mask, device))
        caught.append(item)
        raise _Stop

    handle = first_block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in calibration:
                current["mask"] = batch.token_mask
                try:
                    batch.run(model)
                except _Stop:
                    pass
                else:
                    raise UnsupportedOperationError(
                        f"a forward pass of {type(model).__name__} never reached its first block; "
                        "is the calibration input right for this model?"
                    )
                if meter is not None:
                    meter.add(ActivationMeter.size(caught[-1].args, caught[-1].kwargs))
    finally:
        handle.remove()
    return caught


class BlockStep:
    """One block and the calibration inputs that reach it."""

    def __init__(self, index: int, name: str, block: nn.Module, inputs: list[BlockInput], meter: ActivationMeter) -> None:
        self.index, self.name, self.block, self.inputs = index, name, block, inputs
        self.meter = meter
        self.advanced = False

    def run(self, on_batch: Callable[[BlockInput], Any] | None = None) -> None:
        """Run the block over every input and drop the outputs (for hooks that gather statistics).
        ``on_batch(item)`` wraps each call, e.g. to tell statistics which tokens are padding."""
        with torch.no_grad():
            for item in self.inputs:
                if on_batch is None:
                    self.block(*item.args, **item.kwargs)
                else:
                    with on_batch(item):
                        self.block(*item.args, **item.kwargs)

    def advance(self, observe: Observer | None = None) -> None:
        """Replace each input's hidden states by this block's output: the next block's inputs.
        ``observe(hidden_in, hidden_out, token_mask)`` sees each batch on the way."""
        if self.advanced:
            return
        with torch.no_grad():
            for item in self.inputs:
                old = item.hidden
                new = _hidden_of(self.block(*item.args, **item.kwargs))
                self.meter.add(ActivationMeter.size(new))
                if observe is not None:
                    observe(old, new, item.token_mask)
                item.with_hidden(new)
                self.meter.remove(ActivationMeter.size(old))
        self.advanced = True


def walk_blocks(
    model: nn.Module,
    calibration: Calibration,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "blocks",
    meter: ActivationMeter | None = None,
) -> Iterator[BlockStep]:
    """Yield a :class:`BlockStep` per block, in order; after the caller is done with a step, the
    block is run to produce the next block's inputs (unless the caller already called ``advance``).
    A model without repeated blocks yields one step, the whole model, fed the calibration batches.

    With ``device``, each block is moved there while it is processed and moved back afterwards, so a
    model larger than the accelerator's memory can be handled block by block.
    """
    stack = block_stack(model)
    meter = meter if meter is not None else ActivationMeter()
    with eval_mode(model):
        inputs = capture_inputs(model, stack.blocks[0], calibration, device, meter)
        for index, block in enumerate(tqdm(stack.blocks, desc=desc, unit="block", disable=not progress)):
            home = next(block.parameters()).device if any(True for _ in block.parameters()) else None
            if device is not None:
                block.to(device)
            step = BlockStep(index, stack.block_name(index), block, inputs, meter)
            step.advanced = stack.whole_model  # the whole model's outputs feed no further block
            try:
                yield step
                step.advance()
            finally:
                if device is not None and home is not None:
                    block.to(home)
