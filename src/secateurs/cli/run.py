"""``secateurs run RECIPE.yaml``: a whole pipeline from one YAML file (:mod:`secateurs.recipes`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.recipes import (
    LoadedRecipe,
    RecipeError,
    create_run,
    json_schema,
    load_recipe,
    resumed_recipe,
    run_all,
)
from secateurs.recipes.loader import RecipeStep
from secateurs.recipes.runner import StepDone, read_state

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_run_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", type=Path, metavar="RECIPE", help="the recipe: a YAML file (docs/recipes.md)")
    parser.add_argument("--check", action="store_true", help="validate the recipe (every key, value, file and "
                        "model spec, and each step's options together) without running it")  # fmt: skip
    parser.add_argument("--schema", action="store_true", help="print the JSON Schema of recipes (for editors) and exit")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a value of the recipe, read as YAML (repeatable): steps[0].prune.amount=0.6, "
                        "vars.sts=dev.csv, seed=1")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="apply the recipe's smoke: overrides (few samples, one "
                        "epoch, small evaluations...): a short run that exercises every step")  # fmt: skip
    parser.add_argument("--out", type=Path, metavar="DIR", help="the run directory (default: run-RECIPE in the "
                        "working directory)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace the run directory if it holds a run")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last completed "
                        "step (no RECIPE: the run directory holds it)")  # fmt: skip


def _run_directory(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    return Path("run-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", args.recipe.stem).strip("-.") or "recipe"))


def _recipe(args: argparse.Namespace) -> LoadedRecipe:
    if args.resume is not None:
        if args.recipe is not None or args.overrides or args.smoke or args.out is not None:
            raise UsageError("--resume DIR runs the recipe DIR holds, as resolved: drop RECIPE, --set, --smoke and --out")
        return resumed_recipe(args.resume)
    if args.recipe is None:
        raise UsageError("give a RECIPE file (or --resume DIR, or --schema); see docs/recipes.md")
    return load_recipe(args.recipe, args.overrides, smoke=args.smoke)


def _announce(step: RecipeStep, done: StepDone) -> None:
    saved = f", model saved in {done.model}" if done.model else ""
    print(f"{done.name}: done in {done.seconds:.1f} s{saved}", flush=True)


def _interrupted(directory: Path, total: int) -> int:
    completed = len(read_state(directory))
    print(f"secateurs: interrupted; {completed} of {total} steps completed and kept in {directory}; continue with: "
          f"secateurs run --resume {directory}", file=sys.stderr)  # fmt: skip
    return EXIT_INTERRUPTED


def run_recipe_command(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    try:
        recipe = _recipe(args)
    except RecipeError as exc:
        for line in str(exc).splitlines():
            print(f"secateurs: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(f"{recipe.file}: valid; {len(recipe.steps)} steps: {', '.join(s.kind for s in recipe.steps)}")
        return 0
    directory = args.resume or _run_directory(args)
    if args.resume is None:
        create_run(recipe, directory, overwrite=args.overwrite)
    try:
        run_all(recipe, directory, on_step=_announce)
    except KeyboardInterrupt:
        return _interrupted(directory, len(recipe.steps))
    reports = [step.name for step in recipe.steps if step.kind == "report"]
    print(f"Run directory: {directory}" + (f"; report: {directory / reports[-1] / 'report.md'}" if reports else ""))
    return 0


COMMAND = Command(
    "run",
    "run a recipe: a whole pipeline (prune, shrink, fine-tune, evaluate, export, report) from one YAML file",
    "Validate RECIPE (a YAML file: the model, the data, the steps; docs/recipes.md), then run its steps in order into a "
    "run directory: the recipe, its resolved configuration, the software versions, and one directory per step with "
    "its results and the model it left. Ctrl-C stops with the completed steps kept; --resume DIR goes on from there.",
    add_run_arguments,
    run_recipe_command,
    epilog=(
        "examples:\n"
        "  secateurs run examples/l1_unstructured.yaml\n"
        "  secateurs run examples/minilm_heads_wanda.yaml --set vars.sts=sts-dev.csv --out minilm-run\n"
        "  secateurs run examples/iterative_l2.yaml --smoke --check\n"
        "  secateurs run --resume run-iterative_l2\n"
        "  secateurs run --schema > recipe.schema.json"
    ),
)
