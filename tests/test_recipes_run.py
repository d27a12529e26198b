"""Running recipes: the run directory, reproducible masks, the same pipeline as ``secateurs prune``, and resuming
after an interrupt without repeating a finished step."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import yaml

from secateurs.cli.app import main
from secateurs.recipes import prune_pipeline, step_runners

RECIPE = """\
model: demo
seed: 0
steps:
  - prune: {method: random, amount: 0.3, latency: false}
  - evaluate: {}
  - prune: {method: l1, amount: 0.5, include: ["classifier.*"], latency: false}
  - report:
"""



def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def _masks(model_dir: Path) -> dict:
    return safetensors.torch.load_file(str(model_dir / "masks.safetensors"))


def _same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)


def test_run_directory_holds_every_step(demo_cache, capsys):
    out = demo_cache / "run"
    assert main(["run", str(_recipe(demo_cache)), "--out", str(out), "--set", "steps[2].prune.amount=0.6"]) == 0
    printed = capsys.readouterr().out
    assert "01-prune: done in" in printed and f"Run directory: {out}" in printed
    assert (out / "recipe.yaml").read_text() == RECIPE
    assert yaml.safe_load((out / "resolved.yaml").read_text())["steps"][2]["prune"]["amount"] == 0.6
    assert {"torch", "secateurs", "python", "transformers"} <= set(json.loads((out / "versions.json").read_text()))
    state = json.loads((out / "state.json").read_text())["completed"]
    assert [s["name"] for s in state] == ["01-prune", "02-evaluate", "03-prune", "04-report"]
    assert [s["model"] for s in state] == ["01-prune/model", None, "03-prune/model", None]
    first = json.loads((out / "01-prune" / "result.json").read_text())
    assert first["method"] == "random" and first["seed"] == 0 and 0.25 < first["pruned_sparsity"] < 0.35
    assert json.loads((out / "02-evaluate" / "result.json").read_text())["metric"] == "accuracy"
    report = (out / "04-report" / "report.md").read_text()
    evaluated = json.loads((out / "02-evaluate" / "result.json").read_text())
    assert "| 03-prune |" in report and f"| 02-evaluate | accuracy {evaluated['value']:.4g}% |" in report
    assert "accuracy 0." not in report  # prune rows in the evaluate step's percent, not the source's fraction
    manifest = json.loads((out / "03-prune" / "model" / "manifest.json").read_text())
    assert [record["method"] for record in manifest["pruning"]] == ["random", "l1"]
    assert not list(out.glob(".*")), "no temporary directory left behind"


def test_same_recipe_and_seed_give_the_same_masks(demo_cache):
    recipe = _recipe(demo_cache, "model: demo\nseed: 0\nsteps:\n  - prune: {method: random, amount: 0.3, latency: false}\n")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert main(["run", str(recipe), "--out", str(demo_cache / name), "--set", f"seed={seed}"]) == 0
    a, b, c = (_masks(demo_cache / name / "01-prune" / "model") for name in "abc")
    assert _same(a, b) and not _same(a, c)


def test_a_prune_step_is_secateurs_prune(demo_cache):
    """One pipeline: the recipe's prune step and the command give the same masks for the same options."""
    recipe = _recipe(demo_cache, "model: demo\nseed: 3\nsteps:\n  - prune: {method: random, amount: 0.4, latency: false}\n")
    assert main(["run", str(recipe), "--out", str(demo_cache / "run")]) == 0
    command = ["prune", "demo", "--method", "random", "--amount", "0.4", "--seed", "3", "--no-latency"]
    assert main([*command, "--out", str(demo_cache / "pruned")]) == 0
    assert _same(_masks(demo_cache / "run" / "01-prune" / "model"), _masks(demo_cache / "pruned"))


def test_existing_run_directory_is_refused(demo_cache, capsys):
    recipe = _recipe(demo_cache, "model: demo\nsteps:\n  - evaluate: {}\n")
    out = demo_cache / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert main(["run", str(recipe), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(recipe), "--out", str(out), "--overwrite"]) == 0


def test_interrupted_run_resumes_without_repeating_a_step(demo_cache, monkeypatch, capsys):
    recipe = _recipe(demo_cache)
    assert main(["run", str(recipe), "--out", str(demo_cache / "whole")]) == 0
    pruned = []
    real_prune, real_evaluate = step_runners.RUNNERS["prune"], step_runners.RUNNERS["evaluate"]

    def counting_prune(context, step, out):
        pruned.append(step.name)
        return real_prune(context, step, out)

    def interrupt(context, step, out):
        (out / "partial.txt").write_text("half done")
        raise KeyboardInterrupt

    monkeypatch.setitem(step_runners.RUNNERS, "prune", counting_prune)
    monkeypatch.setitem(step_runners.RUNNERS, "evaluate", interrupt)
    run = demo_cache / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 130
    assert f"1 of 4 steps completed and kept in {run}" in capsys.readouterr().err
    assert not (run / "02-evaluate").exists() and not list(run.glob(".02-evaluate*")), "no half-written step"
    monkeypatch.setitem(step_runners.RUNNERS, "evaluate", real_evaluate)
    assert main(["run", "--resume", str(run)]) == 0
    assert pruned == ["01-prune", "03-prune"], "01-prune ran once, before the interrupt"
    states = [json.loads((d / "state.json").read_text())["completed"] for d in (run, demo_cache / "whole")]
    assert [s["name"] for s in states[0]] == [s["name"] for s in states[1]]
    assert _same(_masks(run / "03-prune" / "model"), _masks(demo_cache / "whole" / "03-prune" / "model"))
    assert main(["run", "--resume", str(run)]) == 0  # nothing left: nothing runs again
    assert pruned == ["01-prune", "03-prune"]


def test_interrupted_finetuning_resumes_from_its_checkpoints(demo_cache, monkeypatch):
    recipe = _recipe(demo_cache, "model: demo\nsteps:\n  - finetune: {method: l1, amount: 0.3, finetune: 1, latency: false}\n")
    real_recover, seen = prune_pipeline.recover, []

    def recover_once(*args, **kwargs):
        seen.append(kwargs["checkpoint_dir"])
        if len(seen) == 1:
            raise KeyboardInterrupt
        return real_recover(*args, **kwargs)

    monkeypatch.setattr(prune_pipeline, "recover", recover_once)
    run = demo_cache / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 130
    assert main(["run", "--resume", str(run)]) == 0
    assert seen == [run / "checkpoints" / "01-finetune"] * 2
    assert json.loads((run / "state.json").read_text())["completed"][0]["model"] == "01-finetune/model"


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main(["run", "r.yaml", "--resume", str(tmp_path)]) == 2
    assert "drop RECIPE" in capsys.readouterr().err
