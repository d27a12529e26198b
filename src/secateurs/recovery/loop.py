"""A plain training loop for the simple case: fine-tune (and prune on a schedule), resumable to the bit.

    controller = PruningController(model, Gradual(0.9, end=600, frequency=30), unit="step")
    result = fit(model, (x_train, y_train), epochs=10, controller=controller, eval_data=(x_test, y_test),
                 checkpoint_dir="runs/gradual", checkpoint_every=50)

Data order is a function of ``(seed, epoch)`` only, and a checkpoint stores model, masks, optimizer,
controller position and every RNG state, so a run killed at any point resumes from its last checkpoint
and continues exactly as if it had never stopped (same batches, same dropout, same masks). Under
``torch.distributed`` each rank trains on its shard of every epoch's permutation, with its RNGs seeded
``seed + rank`` (independent dropout noise), and writes its own checkpoint files.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from secateurs.core.masks import load_mask_state_dict, mask_state_dict
from secateurs.core.summary import count_params
from secateurs.errors import PruningError
from secateurs.recovery.checkpoint import CheckpointManager, pack_module, rng_state, set_rng_state, unpack_module
from secateurs.recovery.controller import PruneEvent, PruningController
from secateurs.recovery.distill import Distiller, logits_of
from secateurs.recovery.distributed import is_distributed, unwrap
from secateurs.runtime import call_model, move_to

OptimizerSpec = str | Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer]
Data = Dataset | DataLoader | tuple[torch.Tensor, ...]


@dataclass
class EpochLog:
    """One epoch: mean training loss, eval accuracy after it, wall time, parameters it started training."""

    epoch: int
    loss: float
    accuracy: float | None
    seconds: float
    params: int
    lr: float


@dataclass
class FitResult:
    """What :func:`fit` did. ``model`` is the trained model (a new object if shrinking rebuilt it)."""

    model: nn.Module
    history: list[EpochLog] = field(default_factory=list)
    events: list[PruneEvent] = field(default_factory=list)
    accuracy_pruned: float | None = None
    steps: int = 0
    seconds: float = 0.0
    resumed_from: str | None = None

    @property
    def accuracy(self) -> float | None:
        return self.history[-1].accuracy if self.history else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "accuracy_pruned": self.accuracy_pruned,
            "steps": self.steps,
            "seconds": self.seconds,
            "resumed_from": self.resumed_from,
            "history": [asdict(log) for log in self.history],
            "events": [event.to_dict() for event in self.events],
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def as_dataset(data: Data) -> Dataset:
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
        return TensorDataset(*data)
    if isinstance(data, Dataset):
        return data
    raise PruningError(f"data must be a Dataset, a DataLoader or a tuple of tensors, got {type(data).__name__}")


def loader_settings(data: Data) -> dict[str, Any]:
    """What a given DataLoader contributes besides its order: collation and workers."""
    if not isinstance(data, DataLoader):
        return {}
    return {"collate_fn": data.collate_fn, "num_workers": data.num_workers, "pin_memory": data.pin_memory,
            "worker_init_fn": data.worker_init_fn}


def epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    """This rank's sample order for ``epoch``: a permutation fixed by ``(seed, epoch)``, sharded by rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    if is_distributed():
        world, rank = dist.get_world_size(), dist.get_rank()
        padded = math.ceil(size / world) * world
        order = (order + order[: padded - size])[rank::world]
    return order


def batches(dataset: Dataset, indices: list[int], batch_size: int, loader_options: dict[str, Any]) -> Iterator[Any]:
    """Batches of ``dataset`` in the given order; tensors datasets are sliced directly (fast)."""
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    if isinstance(dataset, TensorDataset):
        for chunk in chunks:
            index = torch.tensor(chunk)
            yield tuple(t[index] for t in dataset.tensors)
        return
    # a private generator: creating the iterator must not draw from the global RNG (resume exactness)
    yield from DataLoader(dataset, batch_sampler=chunks, generator=torch.Generator().manual_seed(len(indices)), **loader_options)



def split_batch(batch: Any) -> tuple[Any, Any]:
    """(inputs, labels) from ``(x, y)`` tuples or dicts with a ``labels`` key (inputs keep the other keys)."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        return inputs, batch.get("labels", batch.get("label"))
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return (batch[0] if len(batch) == 2 else tuple(batch[:-1])), batch[-1]
    raise PruningError("batches must be (inputs, labels) tuples or dicts with a 'labels' key")


@torch.no_grad()
def top1_accuracy(model: nn.Module, data: Data, batch_size: int = 512, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (inputs, labels)."""
    dataset = as_dataset(data)
    device = torch.device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in batches(dataset, list(range(len(dataset))), batch_size, {}):
        inputs, labels = split_batch(move_to(batch, device, non_blocking=True))
        logits = logits_of(call_model(model, inputs))
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += labels.numel()
    model.train(was_training)
    return correct / total if total else float("nan")


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def make_optimizer(spec: OptimizerSpec, params: Sequence[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if callable(spec):
        return spec(params)
    name = spec.lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise PruningError(f"unknown optimizer {spec!r}; use 'adamw', 'adam', 'sgd' or a callable(params) -> Optimizer")


def lr_factor(schedule: str | Callable[[float], float], progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of training; a function of the step, so it survives
    optimizer rebuilds and resumes."""
    if callable(schedule):
        return schedule(progress)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "constant":
        return 1.0
    raise PruningError(f"unknown lr_schedule {schedule!r}; use 'cosine', 'constant' or a callable(progress) -> factor")


@dataclass(frozen=True)
class _Recipe:
    """How :func:`fit` trains: what it was asked that stays the same for the whole run."""

    epochs: int
    optimizer: OptimizerSpec
    lr: float
    weight_decay: float
    lr_schedule: str | Callable[[float], float]
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor]
    distiller: Distiller | None
    clip_grad_norm: float | None
    eval_data: Data | None
    checkpoint_every: int | None
    seed: int
    log: Callable[[str], None] | None
    on_batch_end: Callable[[int], None] | None


def fit(
    model: nn.Module,
    train: Data,
    *,
    epochs: int,
    controller: PruningController | None = None,
    optimizer: OptimizerSpec = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    lr_schedule: str | Callable[[float], float] = "cosine",
    batch_size: int | None = None,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] = F.cross_entropy,
    distiller: Distiller | None = None,
    clip_grad_norm: float | None = None,
    eval_data: Data | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 2,
    resume: bool = True,
    seed: int = 0,
    loader_options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    on_batch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs``, pruning as ``controller`` says; returns a :class:`FitResult`.

    A DataLoader given as ``train`` lends its dataset, batch size, collation and workers; the order is
    always :func:`epoch_order` (that is what makes resuming exact). ``loader_options`` override the rest.

    Checkpoints go to ``checkpoint_dir`` at every epoch end and every ``checkpoint_every`` steps (the newest
    ``keep_checkpoints`` stay); with ``resume`` the newest one there is picked up. ``accuracy_pruned`` is
    measured on ``eval_data`` right after the controller's last pruning event, before the fine-tuning that
    follows it. ``on_batch_end(step)`` is called after every optimizer step.
    """
    if epochs < 0:
        raise PruningError(f"epochs must be >= 0, got {epochs}")
    if controller is not None and unwrap(controller.model) is not unwrap(model):
        raise PruningError("the controller was built for another model; pass the same model to both")
    recipe = _Recipe(
        epochs=epochs, optimizer=optimizer, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
        loss_fn=loss_fn, distiller=distiller, clip_grad_norm=clip_grad_norm, eval_data=eval_data,
        checkpoint_every=checkpoint_every, seed=seed, log=log, on_batch_end=on_batch_end,
    )
    batch_size = batch_size or (train.batch_size if isinstance(train, DataLoader) else None) or 64
    loader_options = {**loader_settings(train), **(loader_options or {})}
    manager = _checkpoint_manager(checkpoint_dir, keep_checkpoints)
    training = _Training(model, as_dataset(train), batch_size, loader_options, controller, recipe, manager)
    training.begin(manager.load() if manager is not None and resume else None)
    return training.run()


def _checkpoint_manager(directory: str | Path | None, keep: int) -> CheckpointManager | None:
    """Checkpoints in ``directory``; under torch.distributed each rank writes files of its own."""
    if directory is None:
        return None
    suffix = f"-rank{dist.get_rank()}" if is_distributed() else ""
    return CheckpointManager(directory, prefix=f"checkpoint{suffix}", keep=keep)


class _Training:
    """One :func:`fit` run: the model, optimizer, position and history that a checkpoint holds."""

    def __init__(self, model: nn.Module, dataset: Dataset, batch_size: int, loader_options: dict[str, Any],
                 controller: PruningController | None, recipe: _Recipe, manager: CheckpointManager | None) -> None:
        self.model = model
        self.dataset = dataset
        self.batch_size = batch_size
        self.loader_options = loader_options
        self.controller = controller
        self.recipe = recipe
        self.manager = manager
        self.steps_per_epoch = math.ceil(len(epoch_order(recipe.seed, 0, len(dataset))) / batch_size)
        self.total_steps = max(1, recipe.epochs * self.steps_per_epoch)
        self.device = _device_of(model)
        self.result = FitResult(model=model)
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.elapsed = 0.0  # seconds spent before the checkpoint this run resumed from
        self.started = time.perf_counter()
        self.optimizer: torch.optim.Optimizer  # built by begin(), once the model to train is known

    def _new_optimizer(self) -> torch.optim.Optimizer:
        recipe = self.recipe
        params = [p for p in self.model.parameters() if p.requires_grad]
        return make_optimizer(recipe.optimizer, params, recipe.lr, recipe.weight_decay)

    def begin(self, state: dict[str, Any] | None) -> None:
        """Start afresh (seeded; events at position 0 run now) or continue from a checkpoint's ``state``."""
        controller = self.controller
        if state is None:
            seed_everything(self.recipe.seed + (dist.get_rank() if is_distributed() else 0))  # own dropout noise per rank
            if controller is not None:
                controller.start()
                self.model = controller.model
            self.optimizer = self._new_optimizer()
            if controller is not None and controller.history:
                self._after_event(controller.history[-1])  # events at position 0, already run by start()
            return
        self.model = _restore_model(self.model, state, controller)
        self.start_epoch, self.start_batch, self.step = state["epoch"], state["batch"], state["step"]
        self.elapsed = state["seconds"]
        self.result.history = [EpochLog(**log) for log in state["history"]]
        self.result.accuracy_pruned = state["accuracy_pruned"]
        self.result.resumed_from = str(self.manager.latest()) if self.manager else None
        self.optimizer = self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])

    def run(self) -> FitResult:
        self.started = time.perf_counter()
        for epoch in range(self.start_epoch, self.recipe.epochs):
            self._epoch(epoch, self.start_batch if epoch == self.start_epoch else 0)
        result = self.result
        result.model = self.model
        result.events = list(self.controller.history) if self.controller is not None else []
        result.steps = self.step
        result.seconds = self.elapsed + time.perf_counter() - self.started
        return result

    def _epoch(self, epoch: int, first: int) -> None:
        """Train one epoch from its batch ``first``, evaluate, log and checkpoint."""
        recipe, started = self.recipe, time.perf_counter()
        params_trained = count_params(self.model)
        order = epoch_order(recipe.seed, epoch, len(self.dataset))
        self.model.train()
        losses = []
        chunks = batches(self.dataset, order[first * self.batch_size :], self.batch_size, self.loader_options)
        for index, batch in enumerate(chunks, start=first):
            losses.append(self._step(batch))
            if self.controller is not None:
                self._after_event(self.controller.on_step())
            every = recipe.checkpoint_every
            if every and self.step % every == 0 and index + 1 < self.steps_per_epoch:
                self._save(epoch, index + 1)
            if recipe.on_batch_end is not None:
                recipe.on_batch_end(self.step)
        if self.controller is not None:
            self._after_event(self.controller.on_epoch())
        accuracy = top1_accuracy(self.model, recipe.eval_data) if recipe.eval_data is not None else None
        seconds = time.perf_counter() - started
        loss = float(np.mean(losses)) if losses else float("nan")
        lr = self.optimizer.param_groups[0]["lr"]
        self.result.history.append(EpochLog(epoch, loss, accuracy, seconds, params_trained, lr))
        if recipe.log:
            shown = f", accuracy {accuracy:.2%}" if accuracy is not None else ""
            recipe.log(f"epoch {epoch + 1}/{recipe.epochs}: loss {loss:.4f}{shown} ({seconds:.1f}s)")
        self._save(epoch + 1, 0)

    def _step(self, batch: Any) -> float:
        """One optimizer step on ``batch`` at the scheduled learning rate; returns its loss."""
        recipe, model = self.recipe, self.model
        inputs, labels = split_batch(move_to(batch, self.device, non_blocking=True))
        factor = lr_factor(recipe.lr_schedule, self.step / self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
        self.optimizer.zero_grad(set_to_none=True)
        if recipe.distiller is not None:
            loss = recipe.distiller(model, inputs, labels).loss
        else:
            loss = recipe.loss_fn(logits_of(call_model(model, inputs)), labels)
        loss.backward()
        if recipe.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _after_event(self, event: PruneEvent | None) -> None:
        """A shrunk model needs a new optimizer; the last event is when ``accuracy_pruned`` is measured."""
        if event is None:
            return
        if event.shrunk:
            self.model = self.controller.model  # type: ignore[union-attr]
            self.optimizer = self._new_optimizer()
        if event.last and self.recipe.eval_data is not None:
            self.result.accuracy_pruned = top1_accuracy(self.model, self.recipe.eval_data)
        if self.recipe.log:
            self.recipe.log(f"pruned to {event.sparsity:.1%} at {event.unit} {event.position} ({event.params:,} parameters)")

    def _save(self, epoch: int, batch: int) -> None:
        if self.manager is None:
            return
        bare, controller = unwrap(self.model), self.controller
        shrunk = controller is not None and any(e.shrunk for e in controller.history)
        state = {
            "version": 1,
            "epoch": epoch,
            "batch": batch,
            "step": self.step,
            "seconds": self.elapsed + time.perf_counter() - self.started,
            "model": bare.state_dict(),
            "module": pack_module(bare) if shrunk else None,
            "masks": mask_state_dict(bare),
            "optimizer": self.optimizer.state_dict(),
            "controller": controller.state_dict() if controller is not None else None,
            "rng": rng_state(),
            "history": [asdict(log) for log in self.result.history],
            "accuracy_pruned": self.result.accuracy_pruned,
        }
        self.manager.save(state, self.step)


def _restore_model(model: nn.Module, state: dict[str, Any], controller: PruningController | None) -> nn.Module:
    """Load a checkpoint's model, masks and controller position into (or in place of) ``model``."""
    bare = unwrap(model)
    if state.get("module") is not None:
        restored = unpack_module(state["module"]).to(_device_of(bare))
        if controller is None:
            raise PruningError("this checkpoint holds a shrunk model; resume it with its controller")
        controller.model = model = bare = restored
    else:
        bare.load_state_dict(state["model"])
    load_mask_state_dict(bare, state["masks"])
    if controller is not None:
        if state["controller"] is None:
            raise PruningError("the checkpoint was written without a controller; resume without one")
        controller.load_state_dict(state["controller"])
    return model
