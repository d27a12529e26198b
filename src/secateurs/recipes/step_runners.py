"""What each kind of recipe step does: one library call (or the prune pipeline), its results written into the
step's directory. No pruning logic here: the options say which call, the library decides the rest.

Each runner gets the :class:`RunContext` (the model in memory, the latest saved model, earlier exports), the
validated step and the step's (temporary) directory, and returns the step's result (written as ``result.json``)
and whether it changed the model (then it is saved there as ``model/``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secateurs.analysis import check_study_settings, parse_metric, study, task_score, with_unit
from secateurs.export import bench, export
from secateurs.recipes.commands import (
    check_sensitivity_request,
    default_metric,
    export_formats,
    scan_sensitivity,
    study_settings,
)
from secateurs.recipes.loader import LoadedRecipe, RecipeStep
from secateurs.recipes.options import SENSITIVITY_FILES
from secateurs.recipes.prune_pipeline import PruneRun, run_steps
from secateurs.recipes.prune_result import prune_result
from secateurs.sources import LoadedModel
from secateurs.storage import atomic_file, save_pruned

#: The name of the saved model inside a step directory.
MODEL_FOLDER = "model"
RESULT_FILE = "result.json"


@dataclass
class RunContext:
    """What the steps of one run share."""

    directory: Path
    recipe: LoadedRecipe
    loaded: LoadedModel
    #: Pruning records of the model so far (the saved manifests' ``pruning``).
    records: list[dict[str, Any]] = field(default_factory=list)
    #: The model as the latest step that changed it saved it; None while it is the model as loaded.
    model_dir: Path | None = None
    exports: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]
    changed_model: bool = False


def _prune(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    """The prune pipeline of ``secateurs prune`` on the model in memory; fine-tuning checkpoints outside the step
    directory, so an interrupted step resumes from them."""
    args = copy.copy(step.namespace)
    if args.finetune and args.checkpoint_dir is None:
        args.checkpoint_dir = context.directory / "checkpoints" / step.name
    command = f"secateurs run {context.recipe.file} ({step.path})"
    run = PruneRun(args, loaded=context.loaded, command=command, records=list(context.records))
    run_steps(run)
    context.records = run.records
    return Outcome(prune_result(run), changed_model=True)


def _sensitivity(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    check_sensitivity_request(step.namespace)
    result = scan_sensitivity(context.loaded, step.namespace)
    result.to_json(out / SENSITIVITY_FILES["json"])
    result.to_csv(out / SENSITIVITY_FILES["csv"])
    plot = result.plot(out / SENSITIVITY_FILES["plot"])
    files = [SENSITIVITY_FILES["json"], SENSITIVITY_FILES["csv"], plot.name]
    return Outcome({"summary": result.summary(), "table": result.table(step.namespace.top), "notes": result.notes,
                    "files": files})  # fmt: skip


def _study(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    settings = study_settings(step.namespace)
    check_study_settings(settings)
    metric = default_metric(context.loaded, step.namespace)
    result = study(context.loaded, metric, out_dir=out / "study", quiet=True, **settings)
    return Outcome({"model": result.model, "metric": result.label, "dense": result.dense, "notes": result.notes,
                    "seconds": result.seconds, "report": "study/report.html"})  # fmt: skip


def _evaluate(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    args = step.namespace
    spec = args.metric or ("task" if context.loaded.evaluate is not None else "proxy")
    metric = parse_metric(spec, context.loaded, samples=args.eval_samples, num_samples=args.calibration_samples,
                          seed=args.seed)
    value = metric(context.loaded.model)
    return Outcome({"metric": metric.name, "spec": str(spec), "value": value, "unit": metric.unit,
                    "higher_is_better": metric.higher_is_better, "samples": metric.samples})


def _current(context: RunContext) -> Any:
    """The model for calls that take a directory or a model: the latest saved one, else the model in memory."""
    return context.model_dir if context.model_dir is not None else context.loaded


def _export(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    report = export(_current(context), out / "export", export_formats(step.namespace))
    context.exports.append(context.directory / step.name / "export")
    return Outcome({**report.to_dict(), "path": "export"})


def _bench(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    args = step.namespace
    report = bench(_current(context), context.exports, threads=args.threads, budget_s=args.latency_time,
                   latency=args.latency, metric=args.evaluate)  # fmt: skip
    return Outcome(report.to_dict())


def _report(context: RunContext, step: RecipeStep, out: Path) -> Outcome:
    """Every earlier step's headline numbers, as Markdown and JSON."""
    rows = [_headline(path.name, json.loads((path / RESULT_FILE).read_text()))
            for path in sorted(context.directory.glob("[0-9][0-9]-*")) if (path / RESULT_FILE).is_file()]  # fmt: skip
    lines = [f"# {context.recipe.model.spec}: {Path(context.recipe.file).name}", "", "| step | result |", "|---|---|"]
    lines += [f"| {name} | {text} |" for name, text in rows]
    with atomic_file(out / "report.md") as temp:
        temp.write_text("\n".join(lines) + "\n")
    return Outcome({"steps": dict(rows), "report": "report.md"})


def _headline(name: str, result: dict[str, Any]) -> tuple[str, str]:
    """One line of what a step did, from its result."""
    if "params_after" in result:
        text = (f"{result['params_after']:,} parameters ({result['params_before']:,} before), sparsity "
                f"{result['sparsity']:.1%}")
        metrics = result.get("metrics_after") or {}
        text += "".join(f", {key} {with_unit(*task_score(key, value))}" for key, value in metrics.items())
        if result.get("latency_ratio") is not None:
            text += f", latency x{result['latency_ratio']:.2f}"
        return name, text
    if "value" in result:
        sample = f" on a sample: {result['samples']}" if result.get("samples") else ""
        return name, f"{result['metric']} {with_unit(result['value'], result.get('unit', ''))}{sample}"
    if "summary" in result:
        return name, result["summary"].splitlines()[0]
    if "formats" in result:
        return name, "exported: " + ", ".join(result["formats"])
    if "report" in result:
        return name, f"report: {result['report']}"
    return name, ", ".join(sorted(result))[:120]


def save_model(context: RunContext, step: RecipeStep, out: Path) -> None:
    """The model after the step, as ``secateurs prune --out`` saves it (:func:`secateurs.storage.save_pruned`)."""
    loaded = context.loaded
    save_pruned(
        loaded.model, out / MODEL_FOLDER, source=loaded.spec, input_shape=loaded.input_shape, task=loaded.task,
        pruning=context.records, weights_format=getattr(step.namespace, "format", None) or "sparse",
        extra={"recipe": context.recipe.file, "step": step.path},
    )  # fmt: skip


RUNNERS: dict[str, Callable[[RunContext, RecipeStep, Path], Outcome]] = {
    "prune": _prune, "shrink": _prune, "prune_with_data": _prune, "finetune": _prune,
    "sensitivity": _sensitivity, "study": _study, "evaluate": _evaluate, "export": _export, "bench": _bench,
    "report": _report,
}  # fmt: skip
