"""Hugging Face ``Trainer`` integration: prune on a schedule while the Trainer trains.

    from secateurs.recovery import Gradual
    from secateurs.recovery.hf import PruningCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[PruningCallback(Gradual(0.8, end=500, frequency=50), unit="step")])
    trainer.train()

Masks keep pruned weights at zero after every step of the Trainer's optimizer (it is a ``torch.optim``
optimizer, wrapped or not). Trainer checkpoints hold the state_dict only, which has no masks, so the
callback writes ``secateurs_recovery.pt`` (masks and schedule position) into each ``checkpoint-N``
folder and reads it back when training resumes from one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from secateurs.core.masks import load_mask_state_dict, mask_state_dict
from secateurs.errors import PruningError
from secateurs.recovery.checkpoint import atomic_save
from secateurs.recovery.controller import PruningController, Unit
from secateurs.recovery.distributed import unwrap
from secateurs.recovery.schedules import Schedule

STATE_FILE = "secateurs_recovery.pt"


class PruningCallback(TrainerCallback):
    """Run a :class:`PruningController` from a ``Trainer``; options as for the controller (no shrinking:
    the Trainer owns the optimizer and cannot be told that the parameters changed)."""

    def __init__(self, schedule: Schedule, *, unit: Unit = "step", **options: Any) -> None:
        if options.get("shrink"):
            raise PruningError(
                "the Trainer owns its optimizer, so channels cannot be removed mid-training; prune with masks "
                "here and shrink the model after trainer.train()"
            )
        self.schedule = schedule
        self.unit = unit
        self.options = options
        self.controller: PruningController | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise PruningError("the Trainer did not pass the model to PruningCallback.on_train_begin")
        self.controller = PruningController(unwrap(model), self.schedule, unit=self.unit, **self.options)
        saved = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
        if state.global_step > 0 and os.path.isfile(saved):
            data = torch.load(saved, map_location="cpu", weights_only=True)
            load_mask_state_dict(self.controller.model, data["masks"])
            self.controller.load_state_dict(data["controller"])
        elif state.global_step > 0:
            raise PruningError(
                f"resuming at step {state.global_step} but {saved} is missing: the checkpoint was not written "
                "with PruningCallback, so its masks are unknown"
            )
        else:
            self.controller.start()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._require().on_step()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._require().on_epoch()

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        controller = self._require()
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder) and state.is_world_process_zero:
            atomic_save({"masks": mask_state_dict(controller.model), "controller": controller.state_dict()},
                        os.path.join(folder, STATE_FILE))

    def _require(self) -> PruningController:
        if self.controller is None:
            raise PruningError("PruningCallback was used before on_train_begin; pass it to Trainer(callbacks=[...])")
        return self.controller
