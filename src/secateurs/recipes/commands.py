"""What a command or a recipe step asks of the library, from its options: the sensitivity scan (its checks and
the scan), the study's settings and metric, the export's formats.

Options are the attributes of the command's groups in :mod:`secateurs.recipes.options` (an argparse Namespace, or
a recipe step's options as one); refusals are :class:`~secateurs.recipes.errors.OptionError`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from secateurs.analysis import (
    STRUCTURAL_GRANULARITIES,
    EvaluationError,
    Metric,
    SensitivityResult,
    check_samples,
    parse_metric,
    resolve_calibration,
    sensitivity,
)
from secateurs.core.patterns import NM, parse_pattern
from secateurs.data import available_methods, check_calibration_source
from secateurs.errors import PruningError
from secateurs.export import ExportFormat, get_format
from secateurs.recipes.errors import OptionError
from secateurs.recipes.options import DEFAULT_FINETUNE_EPOCHS
from secateurs.recipes.progress import interactive
from secateurs.sources import LoadedModel


def check_sensitivity_request(args: argparse.Namespace) -> None:
    """Refuse contradictory scan options before loading anything."""
    _check_amounts(args)
    _check_method(args)
    check_eval_samples(args)


def check_eval_samples(args: argparse.Namespace) -> None:
    """Refuse --eval-samples without an --eval metric that reads a file or folder, before loading anything."""
    if args.eval_samples is None:
        return
    if args.metric is None:
        raise OptionError("eval_samples", "--eval-samples limits the file or folder of --eval: add --eval "
                          "perplexity:FILE, sts:FILE or imagefolder:DIR, or drop --eval-samples")
    if args.metric.kind == "proxy":
        instead = "size it with --calibration-samples instead" if hasattr(args, "calibration_samples") else "drop it"
        raise OptionError("eval_samples", f"--eval proxy reads a calibration batch, not --eval-samples: {instead}")
    try:
        check_samples(args.metric, args.eval_samples, option="--eval-samples")
    except EvaluationError as exc:
        raise OptionError("eval_samples", f"--eval-samples {args.eval_samples}: {exc}") from None


def _check_amounts(args: argparse.Namespace) -> None:
    granularity = args.granularity
    pattern = None if granularity in STRUCTURAL_GRANULARITIES else parse_pattern(granularity)
    fixed = f"fixes the sparsity at {1 - pattern.n / pattern.m:.0%}" if isinstance(pattern, NM) else None
    if granularity == "layer":
        fixed = "removes each block whole"
    if fixed and args.amounts is not None:
        raise OptionError("amounts", f"--granularity {granularity} {fixed}; drop --amounts")
    if granularity in ("channel", "head") and args.amounts and max(args.amounts) >= 1.0:
        raise OptionError("amounts", f"--granularity {granularity} keeps at least one unit of each group: give --amounts below 1")


def _check_method(args: argparse.Namespace) -> None:
    data_aware = args.method in available_methods()
    if args.granularity == "layer" and args.method is not None:
        raise OptionError("method", "--granularity layer removes whole blocks; no --method ranks inside them: drop --method")
    if data_aware and args.calibration is None:
        raise OptionError("calibration", f"--method {args.method} reads calibration data: add --calibration english, a text file, or train")
    if args.calibration is not None and not data_aware and args.metric.kind != "proxy":
        raise OptionError("calibration", "--calibration feeds a data-aware --method or --eval proxy; drop it, or use one of those")
    if args.calibration not in (None, "train"):
        try:
            check_calibration_source(args.calibration)
        except PruningError as exc:
            raise OptionError("calibration", f"--calibration: {exc}") from None


def scan_sensitivity(loaded: LoadedModel, args: argparse.Namespace) -> SensitivityResult:
    """The scan the options ask for (:data:`~secateurs.recipes.options.SENSITIVITY_GROUPS`), of the loaded model."""
    progress = not args.quiet and interactive()
    seed = {} if args.seed is None else {"seed": args.seed}
    calibration = None
    if args.calibration is not None:
        calibration = resolve_calibration(loaded, args.calibration, num_samples=args.calibration_samples, **seed)
    try:
        metric = parse_metric(args.metric, loaded, calibration=calibration, samples=args.eval_samples,
                              num_samples=args.calibration_samples, **seed)
    except EvaluationError as exc:
        raise OptionError("eval", f"--eval {args.metric}: {exc}") from None
    options: dict[str, Any] = {"seed": args.seed} if args.seed is not None and args.method == "random" else {}
    return sensitivity(
        loaded.model, metric, granularity=args.granularity, amounts=args.amounts, method=args.method,
        calibration=calibration, example_inputs=loaded.example_inputs, units=args.units,
        reuse_activations=args.reuse, progress=progress, **options,
    )  # fmt: skip


def study_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~secateurs.analysis.StudySettings` fields the options ask for (:data:`~secateurs.recipes.options.STUDY_GROUPS`)."""
    modes = args.modes
    if args.finetune_epochs == 0:
        if modes is not None and set(modes) - {"oneshot"}:
            raise OptionError("modes", "--modes other than oneshot fine-tune: give --finetune EPOCHS above 0, or drop --modes")
        modes = ["oneshot"]
    return dict(
        methods=args.methods, amounts=args.amounts, scopes=args.scopes, modes=modes,
        finetune_epochs=args.finetune_epochs or DEFAULT_FINETUNE_EPOCHS, finetune_methods=args.finetune_methods,
        finetune_amounts=args.finetune_amounts, lr=args.lr, sensitivity=args.sensitivity,
        histogram_layers=args.histogram_layers, detail_amount=args.detail_amount, blocks=args.blocks,
        block_amount=args.block_amount, exclude_blocks=args.exclude_blocks, latency=args.latency,
        threads=args.threads, latency_budget_s=args.latency_time, seed=args.seed,
    )  # fmt: skip


def default_metric(loaded: LoadedModel, args: argparse.Namespace) -> Metric:
    """The metric ``args.metric`` names, by default the model's own task metric where it has one, else the proxy."""
    spec = args.metric or ("task" if loaded.evaluate is not None else "proxy")
    try:
        return parse_metric(spec, loaded, samples=args.eval_samples, seed=args.seed)
    except EvaluationError as exc:
        raise OptionError("eval", f"--eval {spec}: {exc}") from None


def export_formats(args: argparse.Namespace) -> list[ExportFormat]:
    """The formats ``args.formats`` names (lists of names), traced with fixed shapes with ``args.fixed_shapes``."""
    chosen = [get_format(name) for names in args.formats for name in names]
    if args.fixed_shapes:
        chosen = [dataclasses.replace(fmt, dynamic=False) if hasattr(fmt, "dynamic") else fmt for fmt in chosen]
    return chosen
