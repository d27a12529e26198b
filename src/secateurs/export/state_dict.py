"""``safetensors``: the state dict as one plain safetensors file, pruning masks folded into the weights.

Any safetensors reader opens it; ``model.load_state_dict`` takes it into the architecture. Tied tensors
(an embedding shared with the output layer) are stored once: their other names are listed in the file's
metadata (``secateurs.aliases``) and ``load_state_dict(..., strict=False)`` leaves them tied. A shrunk model
needs an architecture of the shrunk sizes to load into: for transformers models the ``hf`` format's config
builds it, for others ``torch-export`` and ``onnx`` carry the architecture with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from secateurs.export.formats import Check, ExportError, ExportFormat, Written, register_format
from secateurs.runtime import Inputs
from secateurs.storage import write_weights

STATE_DICT_FILE = "model.safetensors"


def _differing(state: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose saved tensor is not bit-identical to the model's (tied aliases excepted)."""
    return [key for key, tensor in saved.items() if key not in state or not torch.equal(state[key].cpu(), tensor)]


@register_format("safetensors")
@dataclass
class Safetensors(ExportFormat):
    summary = "the state dict as plain safetensors, masks folded in (loads into the architecture)"
    needs_inputs = False

    def write(self, model: nn.Module, example_inputs: Inputs, directory: Path) -> Written:
        state = model.state_dict()
        write_weights(state, directory / STATE_DICT_FILE, "dense")
        saved = safetensors.torch.load_file(directory / STATE_DICT_FILE)
        wrong = _differing(state, saved)
        if wrong:
            raise ExportError(f"the safetensors file does not hold the model's {wrong[0]}; the disk may be failing")
        tied = len(saved) < len(state)
        load = (
            f"import safetensors.torch\nstate = safetensors.torch.load_file({STATE_DICT_FILE!r})\n"
            f"model.load_state_dict(state{', strict=False' if tied else ''})  # model: the architecture, built with "
            "the pruned sizes" + ("; tied tensors are stored once (metadata secateurs.aliases)" if tied else "")
        )
        return Written(
            {STATE_DICT_FILE: load}, Check(0.0, 0.0, 0.0), details={"tensors": len(saved), "bit_identical": True}
        )
