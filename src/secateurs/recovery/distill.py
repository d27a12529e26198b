"""Recovery loss from the dense model as teacher (Hinton et al., 2015), optionally matching hidden states.

    teacher = copy.deepcopy(model).eval()    # before pruning
    distiller = Distiller(teacher, temperature=4.0, alpha=0.7, hidden=["layer2"])
    ...prune model...
    out = distiller(model, x, y)             # runs student and teacher
    out.loss.backward()

``loss = (1 - alpha) * task_loss(logits, y) + alpha * T^2 * KL(teacher_T || student_T) + hidden_weight * MSE``.
The ``T^2`` keeps the soft-target gradients the same size whatever the temperature. Hidden states are the
outputs of named modules (same names in both models, or a ``{student: teacher}`` mapping); they must
keep their shapes, so pick layers whose width pruning does not change (block outputs, not the inside of a
shrunk block).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateurs.errors import PruningError
from secateurs.runtime import call_model


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over samples (and positions)."""
    if student_logits.shape != teacher_logits.shape:
        raise PruningError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "distillation needs the same output layer (do not prune the classifier's outputs)"
        )
    classes = student_logits.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, classes).float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, an object with ``.logits`` (Hugging Face), or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    raise PruningError(f"cannot find logits in a model output of type {type(output).__name__}; return a tensor or .logits")


@dataclass
class DistillOutput:
    loss: torch.Tensor
    output: Any
    #: the separate terms, detached (tensors, so reading them costs no device sync until you ask)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class _Capture:
    """Forward hooks storing the outputs of named modules during one forward pass."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise PruningError(f"no module named {name!r} to take hidden states from") from None
            self.handles.append(module.register_forward_hook(self._store(name)))

    def _store(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, output: Any) -> None:
            self.outputs[name] = logits_of(output)

        return hook

    def __enter__(self) -> _Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


class Distiller:
    """Teacher-guided recovery loss; call it with the student, a batch's inputs and labels."""

    def __init__(
        self,
        teacher: nn.Module,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden: Iterable[str] | Mapping[str, str] = (),
        hidden_weight: float = 1.0,
        task_loss: Callable[[torch.Tensor, Any], torch.Tensor] = F.cross_entropy,
    ) -> None:
        if not temperature > 0:
            raise PruningError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise PruningError(f"alpha weighs the teacher against the labels: it must be in [0, 1], got {alpha}")
        self.teacher = teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hidden = dict(hidden) if isinstance(hidden, Mapping) else {name: name for name in hidden}
        self.hidden_weight = float(hidden_weight)
        self.task_loss = task_loss

    def __call__(self, student: nn.Module, inputs: Any, labels: Any = None) -> DistillOutput:
        with torch.no_grad(), _Capture(self.teacher, self.hidden.values()) as teacher_states:
            teacher_logits = logits_of(call_model(self.teacher, inputs))
        with _Capture(student, self.hidden) as student_states:
            output = call_model(student, inputs)
        logits = logits_of(output)
        soft = kd_loss(logits, teacher_logits, self.temperature)
        parts = {"kd": soft.detach()}
        if labels is None:
            loss = soft
        else:
            task = self.task_loss(logits, labels)
            parts["task"] = task.detach()
            loss = (1 - self.alpha) * task + self.alpha * soft
        if self.hidden:
            hidden = sum(
                self._hidden_mse(name, student_states.outputs[name], teacher_states.outputs[teacher_name])
                for name, teacher_name in self.hidden.items()
            ) / len(self.hidden)
            parts["hidden"] = hidden.detach()
            loss = loss + self.hidden_weight * hidden
        return DistillOutput(loss=loss, output=output, parts=parts)

    @staticmethod
    def _hidden_mse(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise PruningError(
                f"hidden state {name!r} has shape {tuple(student.shape)} in the student but {tuple(teacher.shape)} in "
                "the teacher (shrinking removed channels there); match a layer whose width is kept"
            )
        return F.mse_loss(student.float(), teacher.float())
