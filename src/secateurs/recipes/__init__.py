"""Recipes: a whole pruning pipeline in one YAML file, validated, reproducible and resumable.

* :mod:`.options` - every option of the prune, sensitivity, study, export, bench and summary commands, defined once
  (:class:`Option`); :mod:`.arguments` - their value parsers. The command line builds its parsers from them, recipes
  their schema (:mod:`.schema`);
* :mod:`.prune_pipeline` - the prune pipeline (:class:`PruneRun`, its steps), with :mod:`.prune_checks` and
  :mod:`.prune_result`; ``secateurs prune`` and a recipe's prune steps both run it;
* :mod:`.commands` - the sensitivity scan, the study's settings and the export's formats, from options;
* :mod:`.loader` - reading a recipe (``--set``, ``--smoke``, ``${vars}``) and validating it (:class:`RecipeError`);
* :mod:`.runner`, :mod:`.step_runners` - running it into a run directory, step by step, resumable;
* :mod:`.docs` - docs/recipes.md, generated from the schema.

See docs/recipes.md.
"""

from secateurs.recipes.errors import OptionError
from secateurs.recipes.loader import LoadedRecipe, RecipeError, RecipeStep, load_recipe
from secateurs.recipes.options import Option, OptionGroup
from secateurs.recipes.prune_pipeline import PruneRun, Step, add_prune_step
from secateurs.recipes.runner import create_run, resumed_recipe, run_all
from secateurs.recipes.schema import STEP_KINDS, json_schema

__all__ = [
    "STEP_KINDS",
    "LoadedRecipe",
    "Option",
    "OptionError",
    "OptionGroup",
    "PruneRun",
    "RecipeError",
    "RecipeStep",
    "Step",
    "add_prune_step",
    "create_run",
    "json_schema",
    "load_recipe",
    "resumed_recipe",
    "run_all",
]
