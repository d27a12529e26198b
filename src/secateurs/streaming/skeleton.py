"""The model without its weights: built on the meta device from the checkpoint's config, then given
real tensors a group at a time (one block, or everything outside the blocks) and emptied again.

Buffers the checkpoint does not hold (rotary frequencies, position ids) are computed for real when the
skeleton is built: only parameters go to the meta device. Tied parameters (GPT-2's head and token
embedding) are one tensor in the checkpoint and one object in the model, and stay so.
"""

from __future__ import annotations

from collections.abc import Iterable

import importlib.util

import torch
from torch import nn

from secateurs.errors import UnsupportedOperationError
from secateurs.streaming.checkpoint import Checkpoint, CheckpointError


def build_skeleton(checkpoint: Checkpoint) -> nn.Module:
    """The checkpoint's model class, in the checkpoint's dtype, with every parameter on the meta device."""
    missing = [name for name in ("transformers", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise UnsupportedOperationError(f"streaming builds models with {' and '.join(missing)}: pip install 'secateurs[hf]'")
    import transformers  # optional dependencies, imported only when a checkpoint is streamed
    from accelerate import init_empty_weights

    config = transformers.AutoConfig.from_pretrained(checkpoint.directory)
    config._name_or_path = str(checkpoint.directory)  # where calibration finds the tokenizer
    names = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, names[0], None) if names else None
    with init_empty_weights(include_buffers=False):
        if model_class is None:
            model = transformers.AutoModel.from_config(config, dtype=checkpoint.dtype)
        else:
            model = model_class._from_config(config, dtype=checkpoint.dtype)
    model.tie_weights()  # from_pretrained ties at load time; the skeleton is never loaded
    model.name_or_path = str(checkpoint.directory)
    return model.eval()


class Placement:
    """Which checkpoint tensor fills each parameter and persistent buffer of the skeleton."""

    def __init__(self, model: nn.Module, checkpoint: Checkpoint) -> None:
        self.model, self.checkpoint = model, checkpoint
        self.key_of: dict[str, str] = {}
        prefix = getattr(model, "base_model_prefix", "") + "."
        for names in _tied_groups(model):
            key = next((k for name in names for k in _candidates(name, prefix) if k in checkpoint.tensors), None)
            if key is None:
                raise CheckpointError(
                    f"{checkpoint.directory} holds no tensor for {names[0]}; is it a checkpoint of this config's model?"
                )
            self.key_of.update(dict.fromkeys(names, key))

    def names_under(self, prefix: str) -> list[str]:
        return [name for name in self.key_of if name.startswith(prefix)]

    def names_outside(self, prefix: str) -> list[str]:
        return [name for name in self.key_of if not name.startswith(prefix)]

    def keys(self, names: Iterable[str]) -> list[str]:
        """The checkpoint keys behind ``names``, once each, in checkpoint order."""
        wanted = {self.key_of[name] for name in names}
        return [key for key in self.checkpoint.tensors if key in wanted]

    def load(self, names: Iterable[str], device: torch.device | str | None = None) -> None:
        """Give ``names`` their tensors from the checkpoint (read now)."""
        names = list(names)
        tensors = self.checkpoint.read(self.keys(names), device)
        _put_all(self.model, {name: (self.key_of[name], tensors[self.key_of[name]]) for name in names})

    def free(self, names: Iterable[str]) -> None:
        """Send ``names`` back to the meta device, releasing their memory."""
        empties: dict[str, tuple[str, torch.Tensor]] = {}
        for name in names:
            key = self.key_of[name]
            info = self.checkpoint.tensors[key]
            empties[name] = (key, torch.empty(info.shape, dtype=info.dtype, device="meta"))
        _put_all(self.model, empties)

    def state(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The current tensors of ``names`` under their checkpoint keys (for writing)."""
        state = self.model.state_dict(keep_vars=True)
        return {self.key_of[name]: state[name].detach() for name in names}


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names grouped by the tensor object they hold (tied weights form one group)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return list(groups.values())


def _candidates(name: str, prefix: str) -> list[str]:
    """A model name as the checkpoint may spell it: as is, or with or without the base model's prefix."""
    if prefix != "." and name.startswith(prefix):
        return [name, name[len(prefix) :]]
    return [name, prefix + name] if prefix != "." else [name]


def _put_all(model: nn.Module, tensors_by_name: dict[str, tuple[str, torch.Tensor]]) -> None:
    """Set each name to its tensor (given with its checkpoint key); names sharing a key get one Parameter."""
    parameters: dict[str, nn.Parameter] = {}
    for name, (key, tensor) in tensors_by_name.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = parameters.setdefault(key, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
        else:
            owner._buffers[leaf] = tensor
