"""Reading a recipe: YAML (``yaml.safe_load`` only), ``--smoke`` and ``--set`` overrides, ``${var}``s, validation.

Every problem is reported with the file, the key path and what is allowed (``recipe.yaml: steps[1].prune.amount:
'1.5' is not an amount: ...``), and unknown keys with the closest valid one; nothing runs before all of it passes,
including each step's cross-option checks (the same as the command line's).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from secateurs.analysis import check_study_settings
from secateurs.analysis.specs import SAMPLED_KINDS
from secateurs.data import available_methods
from secateurs.errors import SecateursError
from secateurs.recipes.commands import check_eval_samples, check_sensitivity_request, study_settings
from secateurs.recipes.errors import OptionError, in_recipe_words
from secateurs.recipes.options import options_of
from secateurs.recipes.prune_checks import check_request
from secateurs.recipes.schema import STEP_KINDS, DataSection, ModelSection, Recipe
from secateurs.sources import check_spec

#: Step kinds that run the prune pipeline.
PRUNE_KINDS = ("prune", "shrink", "prune_with_data", "finetune")
#: The keys of ``data:`` that only steps reading calibration data take.
CALIBRATION_KEYS = ("calibration", "calibration_samples", "tokenizer", "seq_len")
_TOKEN = re.compile(r"([A-Za-z_][\w-]*)|\[(\d+)\]")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


class RecipeError(SecateursError, ValueError):
    """A recipe that cannot run as written: one line per problem, each naming the file and the key path."""


@dataclass(frozen=True)
class RecipeStep:
    """One validated step: its position, kind, options (recipe keys) and the options object its code reads."""

    index: int
    kind: str
    options: BaseModel
    namespace: argparse.Namespace

    @property
    def name(self) -> str:
        """The step's directory name in the run directory: ``01-prune``."""
        return f"{self.index + 1:02d}-{self.kind}"

    @property
    def path(self) -> str:
        return f"steps[{self.index}].{self.kind}"


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe: the file's text, the resolved configuration (after overrides), and its steps."""

    file: str
    text: str
    resolved: dict[str, Any]
    recipe: Recipe
    model: BaseModel
    steps: list[RecipeStep]


# ---- reading and overrides -----------------------------------------------------------------------


def parse_yaml(text: str, file: str) -> Any:
    """``yaml.safe_load``: tags that would build Python objects are refused, with the line."""
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        line = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise RecipeError(f"{file}{line}: {exc.problem}; recipes are plain YAML, tags that build Python objects "
                          "are refused") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise RecipeError(f"{file}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def _path_tokens(path: str) -> list[str | int]:
    tokens = [(name or int(index)) for name, index in _TOKEN.findall(path)]
    rebuilt = "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in tokens).lstrip(".")
    if not tokens or rebuilt != path:
        raise RecipeError(f"{path!r} is not a key path; write it as steps[0].prune.amount or vars.NAME")
    return tokens


def set_value(config: dict[str, Any], path: str, value: Any, what: str) -> None:
    """Set ``path`` (``steps[0].prune.amount``) in ``config``; the last key may be new, the rest must exist."""
    tokens = _path_tokens(path)
    node: Any = config
    for depth, token in enumerate(tokens[:-1]):
        child = node[token] if _has(node, token) else None
        if child is None and isinstance(token, str) and isinstance(node, dict):
            child = node[token] = {}  # a step written with no options (``- report:``), or a new section
        if not isinstance(child, (dict, list)):
            where = "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in tokens[: depth + 1]).lstrip(".")
            raise RecipeError(f"{what} {path}: the recipe has no {where} to set a key in")
        node = child
    last = tokens[-1]
    if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        raise RecipeError(f"{what} {path}: no such item (the list has {len(node)})")
    if isinstance(node, dict) and isinstance(last, int):
        raise RecipeError(f"{what} {path}: {path.rsplit('[', 1)[0]} is a mapping, not a list")
    node[last] = value


def _has(node: Any, token: str | int) -> bool:
    if isinstance(node, dict):
        return token in node
    return isinstance(node, list) and isinstance(token, int) and token < len(node)


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY.PATH=VALUE`` from ``--set``; the value is read as a YAML scalar (0.6, true, null, a string)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise RecipeError(f"--set {text}: write KEY.PATH=VALUE, e.g. steps[0].prune.amount=0.6")
    return path.strip(), parse_yaml(value, f"--set {text}")


def _substitute(node: Any, variables: dict[str, Any], where: str, file: str) -> Any:
    """``${name}`` in every string replaced by ``vars.name`` (a string that is only ``${name}`` takes its value)."""
    if isinstance(node, dict):
        return {key: _substitute(value, variables, f"{where}.{key}".lstrip("."), file) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, variables, f"{where}[{i}]", file) for i, value in enumerate(node)]
    if not isinstance(node, str):
        return node
    for name in _VARIABLE.findall(node):
        if name not in variables:
            known = ", ".join(variables) or "none"
            raise RecipeError(f"{file}: {where}: ${{{name}}} is not in vars (vars: {known}); add it, or --set vars.{name}=VALUE")
    whole = _VARIABLE.fullmatch(node)
    return variables[whole.group(1)] if whole else _VARIABLE.sub(lambda m: str(variables[m.group(1)]), node)


def resolve(raw: Any, file: str, overrides: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
    """The configuration to run: ``smoke`` overrides (with --smoke), then ``--set`` ones, then ``${var}``s."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{file}: a recipe is a mapping (model:, steps:, ...), got {type(raw).__name__}")
    config = copy.deepcopy(raw)
    if isinstance(config.get("model"), str):  # ``model: demo`` is ``model: {spec: demo}``: overrides may add keys
        config["model"] = {"spec": config["model"]}
    if smoke:
        smoke_overrides = config.get("smoke") or {}
        if not isinstance(smoke_overrides, dict):
            raise RecipeError(f"{file}: smoke: a mapping of KEY.PATH: VALUE, got {smoke_overrides!r}")
        for path, value in smoke_overrides.items():
            set_value(config, str(path), value, f"{file}: smoke:")
    for text in overrides:
        path, value = parse_override(text)
        set_value(config, path, value, "--set")
    variables = config.get("vars") or {}
    if not isinstance(variables, dict):
        raise RecipeError(f"{file}: vars: a mapping of NAME: VALUE, got {variables!r}")
    resolved = {key: value if key in ("vars", "smoke") else _substitute(value, variables, key, file)
                for key, value in config.items()}  # fmt: skip
    return resolved


# ---- validation ----------------------------------------------------------------------------------


def _problem(error: dict[str, Any], model: type[BaseModel]) -> str:
    """One pydantic error in recipe words: unknown keys with the closest valid one, values with the parser's message."""
    if error["type"] == "extra_forbidden":
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, list(model.model_fields), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(model.model_fields)}"
        return f"unknown key{hint}"
    if error["type"] == "missing":
        return "missing: this key is required"
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else error["msg"]


def validate(model: type[BaseModel], data: Any, where: str, file: str) -> BaseModel:
    """``data`` validated by ``model``; every problem named as ``file: where.key: message``."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
            lines.append(f"{file}: {(where + key).lstrip('.') or 'recipe'}: {_problem(error, model)}")
        raise RecipeError("\n".join(lines)) from None


def _model_section(config: dict[str, Any], file: str) -> BaseModel:
    model = config.get("model")
    if model is None:
        raise RecipeError(f"{file}: model: missing; give a MODEL spec (demo, minilm, torchvision:resnet50, hf:PATH...)")
    section = validate(ModelSection, {"spec": model} if isinstance(model, str) else model, "model", file)
    try:
        check_spec(section.spec, section.input_shape)
    except SecateursError as exc:
        raise RecipeError(f"{file}: model.spec: {exc}") from None
    return section


def _step_entry(entry: Any, index: int, file: str) -> tuple[str, Any]:
    """The kind and options of ``steps[index]``: a mapping with exactly one key, a step kind."""
    kinds = ", ".join(STEP_KINDS)
    if not isinstance(entry, dict) or len(entry) != 1:
        got = f"{len(entry)} keys ({', '.join(map(str, entry))})" if isinstance(entry, dict) else repr(entry)
        raise RecipeError(f"{file}: steps[{index}]: a step is a mapping with one key, the step kind ({kinds}), "
                          f"got {got}")
    (kind, options), = entry.items()
    if kind not in STEP_KINDS:
        close = difflib.get_close_matches(str(kind), list(STEP_KINDS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"use one of {kinds}"
        raise RecipeError(f"{file}: steps[{index}]: unknown step kind {kind!r}; {hint}")
    if options is not None and not isinstance(options, dict):
        raise RecipeError(f"{file}: steps[{index}].{kind}: the step's options are a mapping (key: value), got {options!r}")
    return kind, options


def _reads_data(kind: str, options: BaseModel) -> bool:
    """Whether the step reads calibration data, so takes ``data:``'s calibration when it sets none itself."""
    if kind in PRUNE_KINDS:
        return options.method in available_methods() or options.allocation == "owl"  # type: ignore[attr-defined]
    if kind == "sensitivity":
        metric = options.eval  # type: ignore[attr-defined]
        return options.method in available_methods() or metric is None or metric.kind == "proxy"  # type: ignore[attr-defined]
    return kind == "evaluate"


def _inherited(kind: str, options: BaseModel, data: BaseModel) -> set[str]:
    """The keys of ``data:`` the step takes where it sets none: calibration for steps that read data, the metric
    for steps that evaluate (a prune step only when it prunes to a target), its sample limit with the metric."""
    keys = set(data.model_fields_set)
    if not _reads_data(kind, options):
        keys -= set(CALIBRATION_KEYS)
    if kind in PRUNE_KINDS and options.target is None and options.max_drop is None:  # type: ignore[attr-defined]
        keys.discard("eval")
    metric = getattr(options, "eval", None) if "eval" in options.model_fields_set else getattr(data, "eval", None)
    if "eval" not in keys | options.model_fields_set or getattr(metric, "kind", None) not in SAMPLED_KINDS:
        keys.discard("eval_samples")  # a limit of data: reaches only the steps whose metric reads a file or folder
    return keys


def step_namespace(kind: str, options: BaseModel, recipe: Recipe, model: BaseModel) -> argparse.Namespace:
    """The options object the step's code reads: each option under its attribute, unset ones from ``data:`` (its
    calibration only for steps that read data) and the recipe's seed, the model from ``model:``,
    command-line-only ones at their defaults."""
    data: BaseModel = recipe.data  # type: ignore[assignment]
    inherited = _inherited(kind, options, data)
    values: dict[str, Any] = {"model": model.spec, "device": model.device, "input_shape": model.input_shape}
    for option in options_of(STEP_KINDS[kind].groups):
        if option.key in ("model", "device", "input_shape"):
            continue
        if option.cli_only:
            values[option.attribute] = option.default if option.kind != "flag" else False
            continue
        value = getattr(options, option.key)
        if option.key not in options.model_fields_set and option.key in inherited:
            value = getattr(data, option.key)
        if option.key == "seed" and "seed" not in options.model_fields_set:
            value = recipe.seed
        values[option.attribute] = value
    return argparse.Namespace(**values)


def _check_step(step: RecipeStep, file: str) -> None:
    """The cross-option checks of the step's command, before anything runs."""
    try:
        if step.kind in PRUNE_KINDS:
            check_request(step.namespace, check_model=False)
        elif step.kind == "sensitivity":
            check_sensitivity_request(step.namespace)
        elif step.kind == "study":
            check_eval_samples(step.namespace)
            check_study_settings(study_settings(step.namespace))
        elif step.kind == "evaluate":
            check_eval_samples(step.namespace)
    except OptionError as exc:
        raise RecipeError(f"{file}: {step.path}.{exc.key}: {in_recipe_words(str(exc), recipe_keys())}") from None
    except SecateursError as exc:
        raise RecipeError(f"{file}: {step.path}: {in_recipe_words(str(exc), recipe_keys())}") from None


def recipe_keys() -> dict[str, str]:
    """Command-line spellings that are not ``--key`` with underscores, as recipe keys: ``--no-eval`` -> ``evaluate: false``."""
    table: dict[str, str] = {}
    for kind in STEP_KINDS.values():
        for option in options_of(kind.groups):
            if option.kind == "off":
                table[option.cli] = f"{option.key}: false"
            elif option.cli != f"--{option.key.replace('_', '-')}":
                table[option.cli] = option.key
    return table


def validate_config(config: dict[str, Any], file: str) -> tuple[Recipe, BaseModel, list[RecipeStep]]:
    model = _model_section(config, file)
    data = validate(DataSection, config.get("data"), "data", file)
    recipe = validate(Recipe, {**config, "model": model.spec, "data": data}, "", file)
    if not isinstance(config.get("steps"), list) or not config["steps"]:
        raise RecipeError(f"{file}: steps: a list of steps (- prune: {{...}}), got {config.get('steps')!r}")
    steps, problems = [], []
    for index, entry in enumerate(config["steps"]):
        try:
            steps.append(_step(entry, index, file, recipe, model))
        except RecipeError as exc:  # every step is checked: all problems at once
            problems.append(str(exc))
    if problems:
        raise RecipeError("\n".join(problems))
    _check_data_used(data, steps, file)
    return recipe, model, steps  # type: ignore[return-value]


def _check_data_used(data: BaseModel, steps: list[RecipeStep], file: str) -> None:
    """Refuse data.eval_samples when no step's metric takes it: it would change nothing."""
    limit = getattr(data, "eval_samples", None)
    if limit is not None and all(getattr(step.namespace, "eval_samples", None) != limit for step in steps):
        raise RecipeError(f"{file}: data.eval_samples: no step evaluates a file or folder metric (perplexity:FILE, "
                          "sts:FILE, imagefolder:DIR) that it could limit; drop it, or give such an eval")


def _step(entry: Any, index: int, file: str, recipe: Recipe, model: BaseModel) -> RecipeStep:
    kind, raw = _step_entry(entry, index, file)
    options = validate(STEP_KINDS[kind].model, raw, f"steps[{index}].{kind}", file)
    step = RecipeStep(index, kind, options, step_namespace(kind, options, recipe, model))
    _check_step(step, file)
    return step


def load_recipe(path: str | Path, overrides: Sequence[str] = (), *, smoke: bool = False) -> LoadedRecipe:
    """Read, override and validate the recipe at ``path``; :class:`RecipeError` names every problem."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RecipeError(f"{file}: cannot read the recipe ({exc.strerror})") from None
    return from_text(text, file, overrides, smoke=smoke)


def from_text(text: str, file: str, overrides: Sequence[str] = (), *, smoke: bool = False) -> LoadedRecipe:
    config = resolve(parse_yaml(text, file), file, overrides, smoke)
    recipe, model, steps = validate_config(config, file)
    return LoadedRecipe(file, text, config, recipe, model, steps)
