"""Recovery after pruning: schedules, training integration, distillation, movement pruning, resumable runs.

* :mod:`.schedules` - :class:`OneShot`, :class:`Iterative`, :class:`Gradual` (Zhu & Gupta), to/from dict;
* :mod:`.controller` - :class:`PruningController`, called from your loop (``on_step`` / ``on_epoch``);
* :mod:`.loop` - :func:`fit`, a resumable training loop for the simple case; :func:`top1_accuracy`;
* :mod:`.batchnorm` - :func:`recalibrate_batchnorm`: BatchNorm statistics re-estimated after channels go;
* :mod:`.pipeline` - :func:`recover`: measure, prune on a schedule, fine-tune, measure again;
* :mod:`.distill` - :class:`Distiller`, :func:`kd_loss`: the dense model as teacher;
* :mod:`.movement` - :func:`track_movement` and the ``"movement"`` criterion;
* :mod:`.checkpoint` - atomic checkpoints and RNG state;
* :mod:`.distributed` - masks under torch.distributed;
* :mod:`.hf` - :class:`~secateurs.recovery.hf.PruningCallback` for the Hugging Face Trainer (imported on use).
"""

from typing import Any

from secateurs.recovery.batchnorm import recalibrate_batchnorm
from secateurs.recovery.checkpoint import CheckpointManager, atomic_save
from secateurs.recovery.controller import PruneEvent, PruningController
from secateurs.recovery.distill import Distiller, kd_loss
from secateurs.recovery.distributed import mask_digest, masks_agree, sync_masks
from secateurs.recovery.loop import FitResult, fit, top1_accuracy
from secateurs.recovery.movement import Movement, MovementTracker, track_movement
from secateurs.recovery.pipeline import FINETUNE_LR, RecoveryResult, recover, recovered_fraction
from secateurs.recovery.schedules import Gradual, Iterative, OneShot, Schedule, make_schedule, schedule_from_dict

__all__ = [
    "FINETUNE_LR",
    "CheckpointManager",
    "Distiller",
    "FitResult",
    "Gradual",
    "Iterative",
    "Movement",
    "MovementTracker",
    "OneShot",
    "PruneEvent",
    "PruningCallback",
    "PruningController",
    "RecoveryResult",
    "Schedule",
    "atomic_save",
    "fit",
    "kd_loss",
    "make_schedule",
    "mask_digest",
    "masks_agree",
    "recover",
    "recalibrate_batchnorm",
    "recovered_fraction",
    "schedule_from_dict",
    "sync_masks",
    "top1_accuracy",
    "track_movement",
]


def __getattr__(name: str) -> Any:
    if name == "PruningCallback":  # needs transformers; imported only when asked for
        from secateurs.recovery.hf import PruningCallback

        return PruningCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
