"""Recipes: the schema generated from the CLI's options, and broken recipes refused with the file, the key path and
what is allowed, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.cli.app import build_parser, main
from secateurs.recipes import STEP_KINDS, RecipeError, load_recipe
from secateurs.recipes.docs import render
from secateurs.recipes.options import PRUNE_GROUPS, options_of

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_every_prune_option_is_a_recipe_key_with_the_cli_default():
    parser = build_parser()
    defaults = vars(parser.parse_args(["prune", "demo"]))
    prune_model = STEP_KINDS["prune"].model
    for option in options_of(PRUNE_GROUPS):
        if option.cli_only or option.key in ("model", "device", "input_shape"):
            continue
        assert option.key in prune_model.model_fields, option.key
        assert prune_model.model_fields[option.key].default == defaults[option.attribute], option.key
        dashed = option.cli.removeprefix("--no-" if option.kind == "off" else "--").replace("-", "_")
        assert dashed == option.key or option.kind == "off" or option.flag, option.key


def test_recipe_keys_follow_the_dash_rule():
    """``--calibration-samples`` is ``calibration_samples``; the exceptions are the switches that turn things off."""
    for kind in STEP_KINDS.values():
        for option in options_of(kind.groups):
            if option.kind in ("value", "flag", "toggle", "append", "nargs") and not option.flag:
                assert option.cli == "--" + option.key.replace("_", "-")


def test_schema_is_printed_as_json(capsys):
    assert main(["run", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "secateurs recipe"
    assert {f"{kind}_step" for kind in STEP_KINDS} <= set(schema["$defs"])
    amount = schema["$defs"]["prune_options"]["properties"]["amount"]
    assert "fraction" in amount["description"] and "--amount" in amount["description"]


def test_committed_docs_are_up_to_date():
    assert (ROOT / "docs" / "recipes.md").read_text() == render(), "run: python -m secateurs.recipes.docs > docs/recipes.md"


GOOD = "model: demo\nsteps:\n  - prune: {amount: 0.3}\n"

BROKEN = {
    "unknown key": ("model: demo\nsteps:\n  - prune: {amout: 0.3}\n",
                    "r.yaml: steps[0].prune.amout: unknown key; did you mean amount?"),
    "bad value": ("model: demo\nsteps:\n  - evaluate: {}\n  - prune: {amount: 1.5}\n",
                  "r.yaml: steps[1].prune.amount: '1.5' is not an amount: give a fraction in [0, 1]"),
    "bad choice": ("model: demo\nsteps:\n  - prune: {amount: 0.3, scope: globl}\n",
                   "r.yaml: steps[0].prune.scope: must be one of local, global, row, got 'globl'"),
    "bad flag": ("model: demo\nsteps:\n  - prune: {amount: 0.3, shrink: yes please}\n",
                 "steps[0].prune.shrink: must be true or false, got 'yes please'"),
    "bad model spec": ("model: torchvison:resnet18\nsteps:\n  - prune: {amount: 0.3}\n",
                       "r.yaml: model.spec: "),
    "missing file": ("model: demo\nsteps:\n  - evaluate: {eval: 'sts:no-such.csv'}\n",
                     "r.yaml: steps[0].evaluate.eval: "),
    "non-mapping step": ("model: demo\nsteps:\n  - prune\n",
                         "r.yaml: steps[0]: a step is a mapping with one key, the step kind (prune, shrink"),
    "two keys": ("model: demo\nsteps:\n  - prune: {amount: 0.3}\n    evaluate: {}\n",
                 "got 2 keys (prune, evaluate)"),
    "unknown step": ("model: demo\nsteps:\n  - prun: {amount: 0.3}\n",
                     "r.yaml: steps[0]: unknown step kind 'prun'; did you mean prune?"),
    "options not a mapping": ("model: demo\nsteps:\n  - prune: 0.3\n",
                              "steps[0].prune: the step's options are a mapping"),
    "unsafe tag": ("model: !!python/object/apply:os.system ['echo hi']\nsteps: []\n",
                   "tags that build Python objects are refused"),
    "options together": ("model: demo\nsteps:\n  - prune: {amount: 0.3, granularity: '2:4'}\n",
                         "r.yaml: steps[0].prune.granularity: granularity 2:4 fixes the sparsity at 50%; drop amount"),
    "switch words": ("model: demo\nsteps:\n  - prune: {amount: 0.3, schedule: gradual}\n",
                     "steps[0].prune.schedule: schedule, distill and checkpoint_dir shape fine-tuning: give finetune"),
    "unknown top-level key": ("model: demo\nsed: 1\nsteps:\n  - prune: {amount: 0.3}\n",
                              "r.yaml: sed: unknown key; did you mean seed?"),
    "no steps": ("model: demo\nsteps: []\n", "r.yaml: steps: a list of steps"),
    "missing model": ("steps:\n  - prune: {amount: 0.3}\n", "r.yaml: model: missing"),
    "unknown variable": ("model: demo\nsteps:\n  - evaluate: {eval: 'sts:${sts}'}\n",
                         "r.yaml: steps[0].evaluate.eval: ${sts} is not in vars (vars: none)"),
    "sample limit of a task metric": ("model: demo\nsteps:\n  - evaluate: {eval_samples: 50}\n",
                                      "r.yaml: steps[0].evaluate.eval_samples: eval_samples limits the file or folder"),
    "sample limit nothing reads": ("model: demo\nsteps:\n  - evaluate: {}\ndata:\n  eval_samples: 50\n",
                                   "r.yaml: data.eval_samples: no step evaluates a file or folder metric"),
    "not YAML": ("model: demo\nsteps: [\n", "r.yaml (line 3): not valid YAML"),
    "not a mapping": ("- prune: {amount: 0.3}\n", "r.yaml: a recipe is a mapping"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_recipes_are_refused_with_the_key_path(tmp_path, name):
    text, expected = BROKEN[name]
    with pytest.raises(RecipeError) as caught:
        load_recipe(_write(tmp_path, text))
    assert expected in str(caught.value).replace(str(tmp_path) + "/", "")


def test_check_prints_every_problem_and_exits_2(tmp_path, capsys):
    path = _write(tmp_path, "model: demo\nsteps:\n  - prune: {amout: 0.3, scope: globl}\n  - prun: {}\n")
    assert main(["run", str(path), "--check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == [
        f"secateurs: error: {path}: steps[0].prune.amout: unknown key; did you mean amount?",
        f"secateurs: error: {path}: steps[0].prune.scope: must be one of local, global, row, got 'globl'",
        f"secateurs: error: {path}: steps[1]: unknown step kind 'prun'; did you mean prune?",
    ]


def test_check_of_a_good_recipe(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["run", str(path), "--check"]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid; 1 steps: prune"


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--check"]) == 2
    assert "nope.yaml: cannot read the recipe" in capsys.readouterr().err


def test_set_overrides_values_read_as_yaml(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD), ["steps[0].prune.amount=0.6", "seed=3", "steps[0].prune.include=[a, b]"])
    options = recipe.steps[0].options
    assert options.amount == 0.6 and options.include == ["a", "b"] and recipe.recipe.seed == 3
    assert recipe.resolved["steps"][0]["prune"]["amount"] == 0.6


@pytest.mark.parametrize(("override", "message"), [
    ("steps[3].prune.amount=0.5", "--set steps[3].prune.amount: the recipe has no steps[3]"),
    ("steps[0].prune.amount", "write KEY.PATH=VALUE"),
    ("steps..x=1", "is not a key path"),
    ("steps[0].prune.amount=2.5", "steps[0].prune.amount: '2.5' is not an amount"),
])  # fmt: skip
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(RecipeError, match=None) as caught:
        load_recipe(_write(tmp_path, GOOD), [override])
    assert message in str(caught.value)


def test_set_adds_keys_to_a_model_given_as_a_spec(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD), ["model.input_shape=1,1,8,8"])
    assert recipe.model.spec == "demo" and recipe.model.input_shape == (1, 1, 8, 8)
    assert recipe.steps[0].namespace.input_shape == (1, 1, 8, 8)


def test_smoke_applies_the_recipes_overrides_before_set(tmp_path):
    text = GOOD + "smoke:\n  steps[0].prune.amount: 0.1\n  steps[0].prune.latency: false\n"
    path = _write(tmp_path, text)
    assert load_recipe(path).steps[0].options.amount == 0.3
    smoke = load_recipe(path, smoke=True).steps[0].options
    assert smoke.amount == 0.1 and smoke.latency is False
    assert load_recipe(path, ["steps[0].prune.amount=0.2"], smoke=True).steps[0].options.amount == 0.2


def test_vars_data_and_seed_fill_the_steps(tmp_path):
    (tmp_path / "notes.txt").write_text("some text " * 50)
    text = (
        "model: demo\nseed: 7\nvars: {text: notes.txt}\ndata: {calibration: '${text}', calibration_samples: 4}\n"
        "steps:\n  - prune: {amount: 0.3}\n  - prune_with_data: {amount: 0.3}\n"
        "  - prune_with_data: {amount: 0.3, seed: 1, calibration_samples: 2}\n"
    )
    recipe = load_recipe(_write(tmp_path, text), [f"vars.text={tmp_path / 'notes.txt'}"])
    plain, with_data, own = (step.namespace for step in recipe.steps)
    assert plain.calibration is None and plain.seed == 7  # magnitude reads no data
    assert with_data.method == "wanda" and with_data.calibration == str(tmp_path / "notes.txt")
    assert with_data.calibration_samples == 4 and own.calibration_samples == 2 and own.seed == 1
