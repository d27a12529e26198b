"""Running a recipe into a run directory, step by step, resumable.

The run directory holds ``recipe.yaml`` (the file as written), ``resolved.yaml`` (the configuration run: after
``--smoke``, ``--set`` and ``${vars}``), ``versions.json`` (python, torch, transformers, secateurs...),
``state.json`` (the completed steps) and one directory per step, ``NN-kind/``, with its ``result.json`` and, when
the step changed the model, the model as saved by :func:`secateurs.storage.save_pruned` (``model/``). Every file
and step directory is written atomically, and a step is recorded in ``state.json`` only once its directory is
complete: an interrupt (Ctrl-C) loses at most the step under way, and :func:`resume` carries on from the last
completed one (a fine-tuning step from its checkpoints in ``checkpoints/``), never repeating a finished step.
Each step starts from the generator seeded with ``seed + index``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from secateurs.recipes.errors import OptionError, in_recipe_words
from secateurs.recipes.loader import (
    LoadedRecipe,
    RecipeError,
    RecipeStep,
    from_text,
    recipe_keys,
)
from secateurs.recipes.step_runners import (
    MODEL_FOLDER,
    RESULT_FILE,
    RUNNERS,
    RunContext,
    save_model,
)
from secateurs.sources import LoadedModel, load_model
from secateurs.storage import atomic_directory, atomic_file, check_output_dir
from secateurs.version import __version__

STATE_FILE = "state.json"
RESOLVED_FILE = "resolved.yaml"
RECIPE_FILE = "recipe.yaml"
VERSIONS_FILE = "versions.json"
_PACKAGES = ("torch", "transformers", "numpy", "torchvision", "onnxruntime")


@dataclass(frozen=True)
class StepDone:
    """A completed step, as ``state.json`` records it."""

    name: str
    seconds: float
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "model": self.model}


def versions() -> dict[str, str | None]:
    """The software a run ran on."""
    found: dict[str, str | None] = {"secateurs": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def _write_json(path: Path, payload: Any) -> None:
    with atomic_file(path) as temp:
        temp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_state(directory: Path) -> list[StepDone]:
    state = directory / STATE_FILE
    if not state.is_file():
        raise RecipeError(f"{directory} is not a run directory (no {STATE_FILE}); give one written by secateurs run")
    return [StepDone(**entry) for entry in json.loads(state.read_text())["completed"]]


def create_run(recipe: LoadedRecipe, directory: Path, *, overwrite: bool = False) -> None:
    """The run directory with the recipe, its resolved configuration, the versions and an empty state."""
    if overwrite and directory.is_dir() and not (directory / STATE_FILE).is_file() and any(directory.iterdir()):
        raise RecipeError(f"{directory} is not a run directory (no {STATE_FILE}); refusing to replace it")
    if overwrite and (directory / STATE_FILE).is_file():
        shutil.rmtree(directory)
    if directory.exists() and any(directory.iterdir()):
        raise RecipeError(f"{directory} already exists; pass --overwrite to replace it, or --resume {directory}")
    check_output_dir(directory, overwrite=True)
    with atomic_directory(directory, overwrite=True) as temp:
        (temp / RECIPE_FILE).write_text(recipe.text)
        (temp / RESOLVED_FILE).write_text(yaml.safe_dump(recipe.resolved, sort_keys=False))
        (temp / VERSIONS_FILE).write_text(json.dumps(versions(), indent=2) + "\n")
        (temp / STATE_FILE).write_text(json.dumps({"completed": []}) + "\n")


def resumed_recipe(directory: Path) -> LoadedRecipe:
    """The recipe of a run directory, as it was resolved when the run started."""
    resolved = directory / RESOLVED_FILE
    read_state(directory)
    if not resolved.is_file():
        raise RecipeError(f"{directory} holds no {RESOLVED_FILE}; it was not written by secateurs run")
    loaded = from_text(resolved.read_text(), str(resolved))
    original = directory / RECIPE_FILE
    return LoadedRecipe(str(original), original.read_text(), loaded.resolved, loaded.recipe, loaded.model, loaded.steps)


def _start(recipe: LoadedRecipe, directory: Path, done: list[StepDone]) -> RunContext:
    """The model to go on from: the latest one a completed step saved, else the model as the recipe names it."""
    section = recipe.model
    saved = next((directory / d.model for d in reversed(done) if d.model), None)
    spec = str(saved) if saved is not None else section.spec  # type: ignore[attr-defined]
    loaded: LoadedModel = load_model(spec, input_shape=section.input_shape).to(section.device)  # type: ignore[attr-defined]
    records = list(loaded.manifest.pruning) if saved is not None and loaded.manifest is not None else []
    exports = [directory / d.name / "export" for d in done if (directory / d.name / "export").is_dir()]
    return RunContext(directory, recipe, loaded, records=records, model_dir=saved, exports=exports)


def _run_step(context: RunContext, step: RecipeStep) -> StepDone:
    """One step, into its directory, atomically: on any error or interrupt nothing of it is left."""
    target = context.directory / step.name
    if target.exists():  # a step completed but not recorded (killed in between): ours, run it again
        shutil.rmtree(target)
    torch.manual_seed(context.recipe.recipe.seed + step.index)
    start = time.perf_counter()
    with atomic_directory(target) as temp:
        try:
            outcome = RUNNERS[step.kind](context, step, temp)
        except OptionError as exc:
            words = in_recipe_words(str(exc), recipe_keys())
            raise RecipeError(f"{context.recipe.file}: {step.path}.{exc.key}: {words}") from None
        if outcome.changed_model:
            save_model(context, step, temp)
        (temp / RESULT_FILE).write_text(json.dumps(outcome.result, indent=2, default=str) + "\n")
    if outcome.changed_model:
        context.model_dir = target / MODEL_FOLDER
    model = f"{step.name}/{MODEL_FOLDER}" if outcome.changed_model else None
    return StepDone(step.name, round(time.perf_counter() - start, 3), model)


def run(recipe: LoadedRecipe, directory: Path) -> Iterator[tuple[RecipeStep, StepDone]]:
    """Run the steps ``state.json`` does not list as completed, yielding each as it completes."""
    done = read_state(directory)
    names = [step.name for step in recipe.steps]
    if [d.name for d in done] != names[: len(done)]:
        raise RecipeError(f"{directory}/{STATE_FILE} lists steps this recipe does not have; start a new run")
    context = _start(recipe, directory, done)
    for step in recipe.steps[len(done):]:
        finished = _run_step(context, step)
        done.append(finished)
        _write_json(directory / STATE_FILE, {"completed": [d.to_dict() for d in done]})
        yield step, finished


def run_all(recipe: LoadedRecipe, directory: Path, on_step: Callable[[RecipeStep, StepDone], None] | None = None) -> None:
    """Every remaining step; ``on_step`` hears of each as it completes."""
    for step, finished in run(recipe, directory):
        if on_step is not None:
            on_step(step, finished)
