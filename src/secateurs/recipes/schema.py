"""Recipe schema: pydantic models built from the option records, so every option has one definition.

A recipe is a mapping: ``model`` (a MODEL spec, or ``{spec, input_shape, device}``), ``seed``, ``vars`` (values
that ``${name}`` in any string stands for), ``data`` (calibration and evaluation defaults for every step),
``smoke`` (overrides that ``--smoke`` applies) and ``steps``: a list of single-key mappings, each
``{KIND: {options}}`` with KIND one of :data:`STEP_KINDS`. Each step's options are those of its command
(:mod:`secateurs.recipes.options`) with the same keys, defaults, parsers and messages.
"""

from __future__ import annotations

import argparse
import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    create_model,
)

from secateurs.recipes import arguments
from secateurs.recipes.options import (
    BENCH_GROUPS,
    CALIBRATION,
    DEVICE,
    EVAL_SAMPLES,
    EVALUATE_GROUPS,
    EXPORT_GROUPS,
    INPUT_SHAPE,
    MODEL,
    PRUNE_GROUPS,
    SENSITIVITY_GROUPS,
    STUDY_GROUPS,
    Option,
    OptionGroup,
    eval_option,
    options_of,
)

#: The JSON Schema of what a parser accepts, for editors; parsers not listed take a string.
_INPUT_SCHEMAS: dict[Callable[[str], Any], dict[str, Any]] = {
    arguments.positive_int: {"type": "integer", "minimum": 1},
    arguments.seq_len_arg: {"type": "integer", "minimum": arguments.MIN_SEQ_LEN},
    arguments.non_negative_int: {"type": "integer", "minimum": 0},
    arguments.whole_number: {"type": "integer"},
    arguments.positive_float: {"type": "number", "exclusiveMinimum": 0},
    arguments.max_drop_arg: {"type": "number", "minimum": 0},
    float: {"type": "number"},
    arguments.amount_arg: {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": "%$"}]},
    arguments.amounts_arg: {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]},
    arguments.input_shape_arg: {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
}


class RecipeValueError(ValueError):
    """A value refused by an option's parser; its message is the parser's."""


def _text(value: Any) -> str:
    """A YAML value as the command line would spell it: lists comma-separated, booleans lower case."""
    if isinstance(value, (list, tuple)):
        return ",".join(_text(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _parse_one(option: Option, value: Any) -> Any:
    if option.choices is not None and value not in option.choices:
        raise RecipeValueError(f"must be one of {', '.join(map(str, option.choices))}, got {value!r}")
    if option.parse is None:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeValueError(f"must be a string, got {value!r}")
        return str(value)
    try:
        return option.parse(_text(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise RecipeValueError(str(exc) or f"{value!r} is not valid here") from None


def _validator(option: Option) -> Callable[[Any], Any]:
    """Check a recipe value as the command line checks the option's text."""

    def validate(value: Any) -> Any:
        if value is None:
            return None
        if option.kind in ("flag", "off", "toggle"):
            if not isinstance(value, bool):
                raise RecipeValueError(f"must be true or false, got {value!r}")
            return value
        if option.kind in ("append", "nargs"):
            items = value if isinstance(value, list) else [value]
            return [_parse_one(option, item) for item in items]
        return _parse_one(option, value)

    return validate


def _json_schema(option: Option) -> dict[str, Any]:
    if option.kind in ("flag", "off", "toggle"):
        return {"type": "boolean"}
    one = {"type": "string", "enum": list(option.choices)} if option.choices else dict(_INPUT_SCHEMAS.get(option.parse, {"type": "string"}))
    if option.kind in ("append", "nargs"):
        return {"anyOf": [one, {"type": "array", "items": one}]}
    return one


def help_text(option: Option, default: Any = None) -> str:
    """The option's help as ``--help`` prints it (argparse's ``%(default)s``, ``%(choices)s`` and ``%%`` filled in)."""
    choices = ", ".join(map(str, option.choices or ()))
    return option.help.replace("%(default)s", str(default)).replace("%(choices)s", choices).replace("%%", "%")


def field_of(option: Option, default: Any = None, *, required: bool = False) -> tuple[Any, Any]:
    """The pydantic field of an option: its parser as the validator, its help as the description."""
    annotation = Annotated[Any, PlainValidator(_validator(option)), WithJsonSchema(_json_schema(option))]
    description = f"{help_text(option, default)} (command line: {option.cli})"
    return annotation, Field(... if required else default, description=description)


def options_model(name: str, options: Sequence[Option], defaults: dict[str, Any] | None = None,
                  required: Sequence[str] = ()) -> type[BaseModel]:
    """A pydantic model with one field per option (unknown keys refused); ``defaults`` replace option defaults."""
    changed = defaults or {}
    fields = {
        o.key: field_of(o, changed.get(o.key, o.default), required=o.key in required) for o in options if not o.cli_only
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload]


@dataclass(frozen=True)
class StepKind:
    """A kind of recipe step: its options, and what the step does (for docs)."""

    name: str
    summary: str
    groups: Sequence[OptionGroup]
    model: type[BaseModel]


def recipe_options(groups: Sequence[OptionGroup]) -> list[Option]:
    """The options of ``groups`` a recipe step takes: not the model (the recipe's ``model:``), not command-line-only ones."""
    return [o for o in options_of(groups) if not o.cli_only and o.kind != "positional"
            and o.key not in ("device", "input_shape")]  # fmt: skip


def _step(name: str, summary: str, groups: Sequence[OptionGroup], **changes: Any) -> StepKind:
    model = options_model(f"{name}_options", recipe_options(groups), changes.get("defaults"), changes.get("required", ()))
    return StepKind(name, summary, groups, model)


_PRUNE_STEP_GROUPS = PRUNE_GROUPS[1:]  # the model is the recipe's

#: Every step kind, by the key that names it in ``steps``.
STEP_KINDS: dict[str, StepKind] = {kind.name: kind for kind in (
    _step("prune", "prune the model: any method, granularity, scope, target or allocation (the options of "
          "secateurs prune); with shrink or finetune it removes units or fine-tunes as the command does",
          _PRUNE_STEP_GROUPS),
    _step("shrink", "prune and remove the pruned channels, heads or layers for real (prune with shrink: true; "
          "granularity channel by default)", _PRUNE_STEP_GROUPS,
          defaults={"shrink": True, "granularity": "channel"}),
    _step("prune_with_data", "prune with a data-aware method on calibration data (prune with method: wanda by "
          "default; calibration from this step or the recipe's data)", _PRUNE_STEP_GROUPS,
          defaults={"method": "wanda"}),
    _step("finetune", "prune on a schedule while fine-tuning on the model's training data (prune with "
          "finetune: EPOCHS, required); resumable from its checkpoints", _PRUNE_STEP_GROUPS, required=("finetune",)),
    _step("sensitivity", "prune each unit alone at each amount and write the curves (the options of secateurs "
          "sensitivity)", SENSITIVITY_GROUPS),
    _step("study", "sweep methods x amounts x scopes (x fine-tuning) on the current model and write the HTML report "
          "(the options of secateurs study)", STUDY_GROUPS),
    _step("evaluate", "score the current model with a metric", EVALUATE_GROUPS),
    _step("export", "write the current model in formats that load without secateurs (the options of secateurs "
          "export)", EXPORT_GROUPS),
    _step("bench", "time and size the current model against its dense original and every earlier export (the "
          "options of secateurs bench)", BENCH_GROUPS),
    _step("report", "write report.md and report.json: every step so far, its key numbers and files", ()),
)}  # fmt: skip

#: ``model:`` as a mapping (a string is its ``spec``).
ModelSection = create_model(
    "model",
    __config__=ConfigDict(extra="forbid"),
    spec=(str, Field(..., description=f"{help_text(MODEL)} (command line: MODEL)")),
    input_shape=field_of(INPUT_SHAPE),
    device=field_of(DEVICE, DEVICE.default),
)

#: ``data:``: defaults of every step that reads calibration data or evaluates.
DataSection = options_model("data", [*CALIBRATION.options[:4], eval_option(default=None), EVAL_SAMPLES])


class Recipe(BaseModel):
    """Everything but the steps, which :mod:`secateurs.recipes.loader` validates one by one (for their key paths)."""

    model_config = ConfigDict(extra="forbid")

    model: str | ModelSection = Field(..., description="what to prune: a MODEL spec, or a mapping with spec, "  # type: ignore[valid-type]
                                            "input_shape and device")
    seed: int = Field(0, description="seeds every step (torch's generator, and each step's seed unless it sets its own)")
    vars: dict[str, Any] = Field(default_factory=dict, description="values that ${name} in any string of the recipe "
                                 "stands for; override them with --set vars.NAME=VALUE")
    data: DataSection = Field(default_factory=DataSection, description="calibration and evaluation defaults "  # type: ignore[valid-type]
                              "for every step that does not set its own")
    smoke: dict[str, Any] = Field(default_factory=dict, description="overrides --smoke applies, as KEY.PATH: VALUE "
                                  "(steps[0].prune.finetune: 1): a run of seconds that exercises every step")
    steps: list[Any] = Field(..., description="the steps, in order: each a mapping of one step kind to its options")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, for editors (``secateurs run --schema``)."""
    step_items = [
        create_model(f"{name}_step", __config__=ConfigDict(extra="forbid"), **{name: (kind.model | None, ...)})
        for name, kind in STEP_KINDS.items()
    ]
    full = create_model("recipe", __base__=Recipe, steps=(list[functools.reduce(operator.or_, step_items)], ...))  # type: ignore[call-overload,valid-type]
    schema = full.model_json_schema()
    schema["title"] = "secateurs recipe"
    return schema
