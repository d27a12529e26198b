"""``secateurs study``: the seed articles' whole experiment on one model, as a report (:mod:`secateurs.analysis.study`).

Everything that can be checked without the model (the metric spec, methods, amounts, modes, the output
directory) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from secateurs.analysis import (
    StudyResult,
    check_report_dir,
    check_study_settings,
    study,
)
from secateurs.analysis.figures import FIGURES
from secateurs.analysis.findings import findings
from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import add_options
from secateurs.cli.output import print_json
from secateurs.errors import PruningError
from secateurs.recipes.commands import check_eval_samples, default_metric, study_settings
from secateurs.recipes.options import STUDY_GROUPS
from secateurs.recipes.progress import interactive, say
from secateurs.sources import check_spec, load_model


def add_study_arguments(parser: ArgumentParser) -> None:
    add_options(parser, STUDY_GROUPS)


# ---- checks before the model loads ---------------------------------------------------------------


def output_dir(args: argparse.Namespace) -> Path:
    """--out, or ``study-MODEL`` (the spec with unsafe characters as dashes) in the working directory."""
    if args.out is not None:
        return args.out
    return Path("study-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", args.model).strip("-.") or "model"))


def in_option_words(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with the study's keywords (``finetune_amounts``) written as options (``--finetune-amounts``)."""
    options = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
        if longs and action.dest != "help":
            options[action.dest] = longs[0]
    words = "|".join(sorted(options, key=len, reverse=True))
    return re.sub(rf"\b({words})\b(=)?", lambda m: options[m.group(1)] + (" " if m.group(2) else ""), message)


def check_request(args: argparse.Namespace) -> dict[str, Any]:
    """Refuse a bad request before loading anything; return the study's settings."""
    check_spec(args.model, args.input_shape)
    check_eval_samples(args)
    settings = study_settings(args)
    try:
        check_study_settings(settings)
    except PruningError as exc:
        raise UsageError(in_option_words(str(exc), args.parser)) from None
    check_report_dir(output_dir(args), args.overwrite)
    return settings


# ---- the command ---------------------------------------------------------------------------------


def run_study_command(args: argparse.Namespace) -> int:
    settings = check_request(args)
    quiet = args.quiet or not interactive()
    if not args.quiet:
        say(f"loading {args.model}")
    loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    metric = default_metric(loaded, args)
    out = output_dir(args)
    result = study(loaded, metric, out_dir=out, overwrite=args.overwrite, quiet=quiet, **settings)
    if args.json:
        print_json(result.to_dict())
    else:
        print(format_study(result, out))
    return 0


def format_study(result: StudyResult, out: Path) -> str:
    """What the command prints: the findings, and where the report is."""
    figures = ", ".join(spec.file for spec in FIGURES if spec.applies(result))
    lines = [f"Study of {result.model} ({result.label}, dense {result.dense:.4g}) in {result.seconds:.0f} s:", ""]
    lines += [f"- {line}" for line in [*findings(result), *result.notes]]
    lines += ["", f"Report: {out / 'report.html'} (self-contained), {out / 'summary.md'}; numbers in "
              f"{out / 'study.json'} and CSV; figures in {out / 'figures'} ({figures})."]
    return "\n".join(lines)


COMMAND = Command(
    "study",
    "sweep methods x amounts x scopes (x fine-tuning) and write an HTML report with the seed's figures",
    "Prune MODEL with every method at every amount and scope, measure each copy (metric, nonzeros, MACs, latency "
    "against dense), scan per-layer sensitivity, compare one-shot pruning with fine-tuned and gradual pruning where "
    "the model's training data is known, and for a stack of blocks (a ViT) find the fragile blocks; write a "
    "self-contained HTML report, a Markdown summary, the numbers as JSON and CSV, and the figures.",
    add_study_arguments,
    run_study_command,
    epilog=(
        "examples:\n"
        "  secateurs study demo\n"
        "  secateurs study demo:vit --out study-vit\n"
        "  secateurs study demo --methods l1 l2:shrink --amounts 0.5,0.9 --scope global --finetune 5 --quiet\n"
        "  secateurs study torchvision:resnet18 --eval imagefolder:val --no-latency --amounts 0.3,0.6"
    ),
)
