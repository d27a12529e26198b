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
    DEFAULT_STUDY_AMOUNTS,
    METRIC_USAGE,
    MODES,
    EvaluationError,
    StudyResult,
    check_report_dir,
    check_study_settings,
    parse_method,
    parse_metric,
    study,
)
from secateurs.analysis.figures import FIGURES
from secateurs.analysis.findings import findings
from secateurs.analysis.study_sweep import DEFAULT_METHODS
from secateurs.cli.command import ArgumentParser, Command, UsageError
from secateurs.cli.options import (
    add_json_option,
    add_model_argument,
    add_timing_options,
    eval_spec_arg,
    granularity_arg,
    non_negative_int,
    positive_float,
)
from secateurs.cli.output import interactive, print_json, say
from secateurs.cli.sensitivity import amounts_arg
from secateurs.errors import PruningError
from secateurs.recovery import FINETUNE_LR
from secateurs.sources import check_spec, load_model

DEFAULT_FINETUNE_EPOCHS = 10
LATENCY_TIME = 0.05


def method_arg(text: str) -> str:
    """A study method, CRITERION[:GRANULARITY], checked at parse time."""
    try:
        parse_method(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_study_arguments(parser: ArgumentParser) -> None:
    add_model_argument(parser)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--eval", dest="metric", type=eval_spec_arg, metavar="SPEC",
                       help=f"the metric: {METRIC_USAGE} (default: the model's own task metric where it has one, such "
                       "as the demo's test accuracy, else proxy)")
    sweep.add_argument("--methods", nargs="+", type=method_arg, default=list(DEFAULT_METHODS), metavar="METHOD",
                       help="CRITERION[:GRANULARITY]: random and l1 (unstructured), random:channel and l2:channel "
                       f"(masked channels), l2:shrink (channels removed) (default: {' '.join(DEFAULT_METHODS)})")
    sweep.add_argument("--amounts", type=amounts_arg, default=list(DEFAULT_STUDY_AMOUNTS), metavar="A",
                       help="fractions to prune: 0.1:0.9:0.2 (start:stop:step) or 0.5,0.9 (default 0.1:0.9:0.2)")
    sweep.add_argument("--scope", dest="scopes", nargs="+", choices=("local", "global"), default=["local", "global"],
                       help="rank within each layer, across all layers, or both (default: both)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of random methods and of data order (default 0)")
    _add_recovery_options(parser)
    _add_detail_options(parser)
    timing = parser.add_argument_group("measurement")
    timing.add_argument("--no-latency", dest="latency", action="store_false",
                        help="skip timing each copy against the dense model (MACs only)")
    add_timing_options(timing, latency_time=LATENCY_TIME)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="DIR",
                     help="write the report here (default: study-MODEL in the working directory)")
    out.add_argument("--overwrite", action="store_true", help="replace a study already in DIR")
    out.add_argument("--quiet", action="store_true", help="no progress bars or progress lines (for logs and CI)")
    add_json_option(out, "every number of the study")


def _add_recovery_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("recovery (models with known training data, e.g. demo)")
    group.add_argument("--finetune", dest="finetune_epochs", type=non_negative_int, default=DEFAULT_FINETUNE_EPOCHS,
                       metavar="EPOCHS", help="fine-tuning epochs of each fine-tuned copy (default %(default)s; 0: "
                       "one-shot only)")
    group.add_argument("--modes", nargs="+", choices=MODES, help="what to compare: oneshot, finetuned (one-shot then "
                       "fine-tuning), iterative, gradual (default: oneshot finetuned gradual)")
    group.add_argument("--finetune-methods", nargs="+", type=method_arg, metavar="METHOD",
                       help="methods to fine-tune, among --methods (default: those neither random nor shrunk)")
    group.add_argument("--finetune-amounts", type=amounts_arg, metavar="A",
                       help="amounts to fine-tune at, among --amounts (default: the largest)")
    group.add_argument("--lr", type=positive_float, default=FINETUNE_LR,
                       help="fine-tuning learning rate, as secateurs prune --finetune (default %(default)s)")


def _add_detail_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("details")
    group.add_argument("--sensitivity", type=granularity_arg, default="unstructured", metavar="G",
                       help="granularity of the per-layer sensitivity scan (default %(default)s)")
    group.add_argument("--no-sensitivity", dest="sensitivity", action="store_const", const=None,
                       help="skip the sensitivity scan")
    group.add_argument("--histogram-layers", nargs="+", metavar="LAYER",
                       help="layers whose weights are drawn as histograms (default: the first and last pruned)")
    group.add_argument("--detail-amount", type=float, metavar="A",
                       help="amount of the histograms and per-layer sparsity bars, among --amounts (default: the "
                       "one nearest 0.5)")
    group.add_argument("--blocks", action=argparse.BooleanOptionalAction, default=None,
                       help="per-block sensitivity and sparing the most fragile blocks (default: when the model is a "
                       "stack of repeated blocks, such as a ViT)")
    group.add_argument("--block-amount", type=float, metavar="A",
                       help="amount of the block study (default: --detail-amount)")
    group.add_argument("--exclude-blocks", type=non_negative_int, default=2, metavar="K",
                       help="how many of the most fragile blocks stay dense (default %(default)s)")


# ---- checks before the model loads ---------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~secateurs.analysis.StudySettings` fields the command line asks for."""
    modes = args.modes
    if args.finetune_epochs == 0:
        if modes is not None and set(modes) - {"oneshot"}:
            raise UsageError("--modes other than oneshot fine-tune: give --finetune EPOCHS above 0, or drop --modes")
        modes = ["oneshot"]
    return dict(
        methods=args.methods, amounts=args.amounts, scopes=args.scopes, modes=modes,
        finetune_epochs=args.finetune_epochs or DEFAULT_FINETUNE_EPOCHS, finetune_methods=args.finetune_methods,
        finetune_amounts=args.finetune_amounts, lr=args.lr, sensitivity=args.sensitivity,
        histogram_layers=args.histogram_layers, detail_amount=args.detail_amount, blocks=args.blocks,
        block_amount=args.block_amount, exclude_blocks=args.exclude_blocks, latency=args.latency,
        threads=args.threads, latency_budget_s=args.latency_time, seed=args.seed,
    )  # fmt: skip


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
    settings = settings_of(args)
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
    spec = args.metric or ("task" if loaded.evaluate is not None else "proxy")
    try:
        metric = parse_metric(spec, loaded, seed=args.seed)
    except EvaluationError as exc:
        raise UsageError(f"--eval {spec}: {exc}") from None
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
