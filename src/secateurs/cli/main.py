"""The ``secateurs`` command line: ``prune``, ``summary`` and ``demo``.

Exit codes: 0 success, 2 bad usage (bad option, unknown model spec, input shape that does not fit,
output directory that exists), 1 failure (missing package, failed write, anything else). Errors are
one line on stderr; ``--debug`` adds the traceback.

How to extend ``secateurs prune`` (later features plug in here, without touching the existing steps):

* an option group is a function ``(parser) -> None`` decorated with :func:`prune_options`;
* a pipeline step is a :class:`Step` (a name, a function of the :class:`PruneRun` it updates, and a
  predicate on the parsed arguments saying whether it runs), placed with
  ``add_prune_step(step, after="prune")``. Steps share state through :class:`PruneRun`: the loaded
  model, measurements, pruning records (``run.records``, saved in the manifest) and ``run.result`` (the JSON output).

A new subcommand is a :class:`Command` added with :func:`register_command`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from secateurs.core.engine import PruneReport, check_amount, prune
from secateurs.core.patterns import NM, parse_pattern
from secateurs.errors import PruningError, SecateursError
from secateurs.measure import Measurements, measure
from secateurs.sources.loading import LoadedModel, ModelSpecError, available_sources, load_model, parse_input_shape
from secateurs.storage.directory import OutputExistsError, SavedModel, check_output_dir, save_pruned
from secateurs.version import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(SecateursError, ValueError):
    """A command line that cannot work as written."""


#: Errors that mean "the command line is wrong" (exit 2); every other error is a failure (exit 1).
USAGE_ERRORS: tuple[type[BaseException], ...] = (UsageError, ModelSpecError, PruningError, OutputExistsError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as one line (raised, so :func:`main` prints and exits 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _say(message: str) -> None:
    """Progress for people: to stderr, and only when stderr is a terminal (pipes and tests stay clean)."""
    if sys.stderr.isatty():
        print(f"secateurs: {message}", file=sys.stderr, flush=True)


# ---- argument types ------------------------------------------------------------------------------


def amount_arg(text: str) -> float | int:
    """``0.5`` or ``50%`` (a fraction of weights or groups) or ``1000`` (a count)."""
    value: float | int
    try:
        if text.strip().endswith("%"):
            value = float(text.strip()[:-1]) / 100
        elif any(ch in text for ch in ".eE"):
            value = float(text)
        else:
            value = int(text)
        return check_amount(value)
    except (ValueError, PruningError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount: give a fraction in [0, 1] (0.5 or 50%) or a count (1000)"
        ) from None


def granularity_arg(text: str) -> str:
    if text in ("head", "layer"):
        return text
    try:
        parse_pattern(text)
    except PruningError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def input_shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_input_shape(text)
    except ModelSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def device_arg(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, mps...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here; use --device cpu")
    return text


def _number_arg(convert: Callable[[str], Any], accept: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, and refuse it unless ``accept`` holds, naming ``what`` was expected."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_float = _number_arg(float, lambda v: v > 0, "a positive number")
positive_int = _number_arg(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number_arg(int, lambda v: v >= 0, "a whole number of epochs (0 or more)")


#: Methods that read a calibration set (``--calibration``); they go through secateurs.data_aware.
DATA_METHODS = ("wanda", "sparsegpt", "taylor", "activation")
#: Granularities ``--shrink`` removes physically (secateurs.structural.shrink).
SHRINK_GRANULARITIES = ("channel", "head", "layer")


def _criteria_names() -> list[str]:
    from secateurs.core.criteria import available_criteria

    hidden = {"custom", "scores", "block_influence", "influence", *DATA_METHODS}
    return [name for name in available_criteria() if name not in hidden] + list(DATA_METHODS)


# ---- shared options ------------------------------------------------------------------------------


def _add_model_argument(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "model",
        metavar="MODEL",
        help="model spec: "
        + ", ".join(s.usage for s in available_sources())
        + ", or a directory written by secateurs prune",
    )
    group.add_argument(
        "--device",
        type=device_arg,
        default="cpu",
        help="where to run the model: cpu, cuda, cuda:1, mps... (default %(default)s); files are always written from CPU",
    )
    group.add_argument(
        "--input-shape",
        type=input_shape_arg,
        metavar="SHAPE",
        help="shape of the example input, e.g. 1,3,224,224 (images) or 1,128 (token ids); default per model",
    )


def _add_measure_options(parser: ArgumentParser, latency_default: float = 0.5) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("measurement")
    group.add_argument(
        "--no-latency",
        dest="latency",
        action="store_false",
        help="skip timing the forward pass (the slowest measurement)",
    )
    group.add_argument(
        "--latency-time",
        type=positive_float,
        default=latency_default,
        metavar="SECONDS",
        help=f"time forward passes for at least this long, after warm-up; the median is reported (default {latency_default})",
    )
    group.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="intra-op threads while timing (default: torch's current setting; 1 is steadier on a shared machine)",
    )
    return group


def _add_common_options(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )


# ---- secateurs prune: options --------------------------------------------------------------------

PRUNE_OPTION_GROUPS: list[Callable[[ArgumentParser], None]] = []


def prune_options(add: Callable[[ArgumentParser], None]) -> Callable[[ArgumentParser], None]:
    """Register a function that adds an option group to ``secateurs prune``."""
    PRUNE_OPTION_GROUPS.append(add)
    return add


@prune_options
def _model_options(parser: ArgumentParser) -> None:
    _add_model_argument(parser)


@prune_options
def _pruning_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("pruning")
    group.add_argument(
        "--method",
        default="magnitude",
        choices=_criteria_names(),
        metavar="METHOD",
        help="importance criterion: %(choices)s (default %(default)s)",
    )
    group.add_argument(
        "--norm", type=positive_float, default=2.0, metavar="P", help="order of the norm for --method ln (default 2)"
    )
    group.add_argument(
        "--amount",
        type=amount_arg,
        metavar="AMOUNT",
        help="how much to prune: a fraction (0.5 or 50%%) of the weights or groups of each layer (local) "
        "or of all selected ones (global), or a count; not with N:M",
    )
    group.add_argument(
        "--granularity",
        type=granularity_arg,
        default="unstructured",
        metavar="G",
        help="unstructured, N:M (e.g. 2:4), channel (whole output channels/neurons), in (input channels); "
        "with --shrink also head (attention heads) or layer (whole residual blocks) (default %(default)s)",
    )
    group.add_argument(
        "--scope",
        choices=("local", "global"),
        default="local",
        help="rank within each layer (local) or across all selected layers (global) (default %(default)s)",
    )
    group.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="prune only parameters matching this glob or re:REGEX (repeatable)",
    )
    group.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="never prune parameters matching this glob or re:REGEX (repeatable); with --shrink, module names kept whole",
    )
    group.add_argument("--seed", type=int, help="seed for random criteria (default: torch's global generator)")


@prune_options
def _structural_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("physical removal (--shrink)")
    group.add_argument(
        "--shrink",
        action="store_true",
        help="remove the pruned channels, heads or layers for real (--granularity channel, head or layer): "
        "a smaller dense model, checked against the masked one (max_abs_diff)",
    )
    group.add_argument(
        "--prune-normalized",
        action="store_true",
        help="also shrink widths under a normalisation (a transformer's or ConvNeXt's hidden size)",
    )
    group.add_argument("--round-to", type=positive_int, metavar="N", help="keep channel counts multiples of N (e.g. 8)")
    group.add_argument(
        "--scored-by",
        choices=("outputs", "all"),
        help="score a unit by the weights producing it (outputs: filters, rows) or also by those reading it "
        "(all); default: the method's own choice (outputs for magnitude/Ln/random)",
    )


@prune_options
def _calibration_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("data-aware pruning (--method wanda, sparsegpt, taylor, activation)")
    group.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="calibration data: a text file, a built-in text (english, random), or train (the model's own "
        "training inputs, e.g. the demo's digits)",
    )
    group.add_argument(
        "--calibration-samples",
        type=positive_int,
        metavar="N",
        help="number of calibration samples (default: 128 windows of text, or 256 training examples)",
    )
    group.add_argument(
        "--allocation",
        choices=("uniform", "owl"),
        default="uniform",
        help="sparsity per block: uniform, or owl (less for blocks with more outlier weights) (default %(default)s)",
    )


@prune_options
def _recovery_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("recovery (fine-tuning; models with known training data, e.g. demo)")
    group.add_argument(
        "--finetune",
        type=non_negative_int,
        default=0,
        metavar="EPOCHS",
        help="fine-tune for EPOCHS epochs, pruning on --schedule meanwhile; pruned weights stay zero (default 0: no fine-tuning)",
    )
    group.add_argument(
        "--schedule",
        choices=("oneshot", "iterative", "gradual"),
        default="oneshot",
        help="oneshot: prune, then fine-tune; iterative: prune in up to 5 equal rounds at epoch boundaries; "
        "gradual: cubic schedule (Zhu & Gupta) every few steps; both finish after 60%% of the epochs (default %(default)s)",
    )
    group.add_argument("--distill", action="store_true", help="add a distillation loss (KL, T=2) from the dense model")
    group.add_argument("--lr", type=positive_float, default=3e-3, help="fine-tuning learning rate, AdamW with cosine decay (default %(default)s)")
    group.add_argument(
        "--checkpoint-dir", type=Path, metavar="DIR", help="write resumable checkpoints here (atomically); rerun to resume"
    )


@prune_options
def _measurement_options(parser: ArgumentParser) -> None:
    group = _add_measure_options(parser)
    group.add_argument(
        "--no-eval",
        dest="evaluate",
        action="store_false",
        help="skip the task metric of models that have one (e.g. the demo CNN's accuracy)",
    )


@prune_options
def _output_options(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="save the pruned model to this directory (written atomically); without it nothing is saved",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists (only a directory secateurs wrote)"
    )
    group.add_argument(
        "--format",
        choices=("sparse", "dense", "both"),
        default="sparse",
        help="weights file: sparse (bitmask + nonzeros, small), dense (plain safetensors) or both (default %(default)s)",
    )
    group.add_argument("--json", action="store_true", help="print one JSON object instead of the human-readable report")
    group.add_argument("--layers", action="store_true", help="also print the per-layer pruning table")


# ---- secateurs prune: pipeline -------------------------------------------------------------------


@dataclass
class PruneRun:
    """State shared by the steps of ``secateurs prune``."""

    args: argparse.Namespace
    loaded: LoadedModel | None = None
    before: Measurements | None = None
    after: Measurements | None = None
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    reports: list[PruneReport] = field(default_factory=list)
    #: Pruning records, oldest first; saved as the manifest's ``pruning`` list.
    records: list[dict[str, Any]] = field(default_factory=list)
    saved: SavedModel | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: Extra keys for the JSON output, set by steps.
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> Any:
        assert self.loaded is not None, "the load step runs first"
        return self.loaded.model


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[PruneRun], None]
    enabled: Callable[[argparse.Namespace], bool] = lambda args: True
    message: str = ""


def _check_request(run: PruneRun) -> None:
    """Refuse contradictory options before any slow work."""
    args = run.args
    pattern = None if args.granularity in ("head", "layer") else parse_pattern(args.granularity)
    if isinstance(pattern, NM):
        if args.amount is not None:
            raise UsageError(
                f"--granularity {args.granularity} fixes the sparsity at {1 - pattern.n / pattern.m:.0%}; drop --amount"
            )
        if args.scope == "global":
            raise UsageError("N:M pruning is decided within each block of M weights; use --scope local")
    elif args.amount is None:
        raise UsageError("give --amount (e.g. --amount 0.5), or an N:M --granularity such as 2:4")
    _check_shrink_and_data(args)
    if args.finetune == 0 and (args.schedule != "oneshot" or args.distill or args.checkpoint_dir):
        raise UsageError("--schedule, --distill and --checkpoint-dir shape fine-tuning: give --finetune EPOCHS too")
    if args.finetune and isinstance(pattern, NM) and args.schedule != "oneshot":
        raise UsageError("N:M fixes the sparsity of every block at once: use --schedule oneshot with --finetune")
    if args.out is not None:
        check_output_dir(args.out, args.overwrite)


def _uses_data(args: argparse.Namespace) -> bool:
    return args.method in DATA_METHODS or args.allocation == "owl"


def _check_shrink_and_data(args: argparse.Namespace) -> None:
    if args.granularity in ("head", "layer") and not args.shrink:
        raise UsageError(f"--granularity {args.granularity} removes whole units physically: add --shrink")
    if args.shrink and args.granularity not in SHRINK_GRANULARITIES:
        raise UsageError(f"--shrink removes channels, heads or layers: use --granularity {', '.join(SHRINK_GRANULARITIES)}")
    if args.shrink and args.include:
        raise UsageError("--shrink follows coupled channels through the whole model: drop --include, keep layers whole with --exclude MODULE")
    if (args.prune_normalized or args.round_to or args.scored_by) and not args.shrink:
        raise UsageError("--prune-normalized, --round-to and --scored-by shape physical removal: add --shrink")
    if args.shrink and args.method == "sparsegpt":
        raise UsageError("SparseGPT prunes weights inside rows; to remove units use --method activation, wanda or taylor")
    if args.shrink and args.allocation == "owl":
        raise UsageError("--allocation owl sets unstructured sparsity per block; drop it with --shrink")
    if _uses_data(args) and args.calibration is None:
        raise UsageError(f"--method {args.method} needs calibration data: add --calibration english, a text file, or train")
    if args.calibration is not None and not (_uses_data(args) or (args.shrink and args.method in DATA_METHODS)):
        raise UsageError(f"--method {args.method} reads no calibration data; drop --calibration or use --method wanda")
    if args.finetune and _uses_data(args):
        raise UsageError(
            "--finetune prunes with data-free criteria on its schedule; prune with --method "
            f"{args.method} first (--out DIR), then fine-tune from Python (secateurs.recovery)"
        )
    if args.finetune and args.shrink and args.granularity != "channel":
        raise UsageError("--finetune with --shrink removes channels between cycles: use --granularity channel")


def _load(run: PruneRun) -> None:
    run.loaded = load_model(run.args.model, input_shape=run.args.input_shape).to(run.args.device)
    if run.loaded.manifest is not None:
        run.records = list(run.loaded.manifest.pruning)


def _measure(run: PruneRun) -> Measurements:
    loaded, args = run.loaded, run.args
    assert loaded is not None, "the load step runs first"
    return measure(
        loaded.model, loaded.example_inputs, latency=args.latency, min_run_time=args.latency_time, threads=args.threads
    )


def _measure_before(run: PruneRun) -> None:
    run.before = _measure(run)
    if run.args.evaluate and run.loaded and run.loaded.evaluate:
        run.metrics_before = run.loaded.evaluate(run.model)


def _criterion(args: argparse.Namespace) -> Any:
    """The criterion asked for, with its options."""
    from secateurs.core.criteria import get_criterion

    options: dict[str, Any] = {"n": args.norm} if args.method in ("ln", "norm") else {}
    if args.seed is not None:
        options["seed"] = args.seed
    return get_criterion(args.method, **options)


def _prune(run: PruneRun) -> None:
    args = run.args
    criterion = _criterion(args)
    report = prune(
        run.model,
        args.amount,
        method=criterion,
        granularity=args.granularity,
        scope=args.scope,
        include=args.include,
        exclude=args.exclude,
    )
    _record(
        run, report, criterion=repr(criterion), layers_pruned=len(report.layers), layers_skipped=len(report.skipped),
        params=report.params, zeros=report.zeros, sparsity=report.sparsity,
    )


def _calibration(run: PruneRun) -> Any:
    """The ``--calibration`` source as secateurs.calibration takes it."""
    args, loaded = run.args, run.loaded
    assert loaded is not None
    if args.calibration == "train":
        if loaded.training_data is None:
            raise UsageError(f"--calibration train: the CLI knows no training data for {args.model}; give a text file or english")
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        train = loaded.training_data[0]
        if not isinstance(train, tuple):
            return train
        count = args.calibration_samples or 256
        generator = torch.Generator().manual_seed(args.seed if args.seed is not None else 0)
        chosen = torch.randperm(len(train[0]), generator=generator)[:count]
        return DataLoader(TensorDataset(train[0][chosen], train[1][chosen]), batch_size=32)
    path = Path(args.calibration).expanduser()
    return str(path) if path.is_file() else args.calibration


def _record(run: PruneRun, report: PruneReport | None = None, **extra: Any) -> None:
    """Keep a pruning step's report, and its record for the manifest (what was asked, plus ``extra``)."""
    args = run.args
    if report is not None:
        run.reports.append(report)
    run.records.append(
        {
            "method": args.method,
            "granularity": args.granularity,
            "scope": args.scope,
            "amount": args.amount,
            "seed": args.seed,
            "include": args.include,
            "exclude": args.exclude,
            **extra,
            "secateurs_version": __version__,
        }
    )


def _prune_with_data(run: PruneRun) -> None:
    """Wanda, SparseGPT, Taylor or OWL-allocated pruning, block by block on the calibration set."""
    from secateurs.data.api import prune_with_data

    args = run.args
    report = prune_with_data(
        run.model,
        _calibration(run),
        args.amount,
        method=args.method,
        granularity=args.granularity,
        allocation=args.allocation,
        scope=args.scope if args.scope == "global" else None,
        include=args.include,
        exclude=args.exclude,
        num_samples=args.calibration_samples,
        seed=args.seed if args.seed is not None else 0,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    _record(
        run, report, allocation=args.allocation, calibration=report.calibration, block_amounts=report.block_amounts,
        sparsity=report.sparsity, seconds=report.seconds,
    )


def _shrink_criterion(run: PruneRun) -> Any:
    """The criterion ranking units for --shrink; data-aware ones are measured on the calibration set first."""
    args = run.args
    if args.method not in DATA_METHODS:
        return _criterion(args)
    from secateurs.data.api import block_influence, collect_input_statistics
    from secateurs.data.criteria import Activation, BlockInfluence, Taylor, Wanda, accumulate_gradients

    data = _calibration(run)
    options = {"num_samples": args.calibration_samples, "seed": args.seed if args.seed is not None else 0}
    if args.granularity == "layer":
        if args.method == "taylor":
            raise UsageError("layers are ranked by block influence: use --method activation (or wanda) with --granularity layer")
        return BlockInfluence(block_influence(run.model, data, progress=sys.stderr.isatty(), **options))
    if args.method == "taylor":
        from secateurs.data.calibration import load_calibration

        calibration = load_calibration(data, run.model, **options)
        return Taylor(accumulate_gradients(run.model, calibration, list(run.model.parameters())))
    stats = collect_input_statistics(run.model, data, **options)
    return (Wanda if args.method == "wanda" else Activation)(stats, missing="zero")


def _shrink_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {
        "ignore": args.exclude,
        "round_to": args.round_to,
        "prune_normalized": args.prune_normalized,
        "scored_by": args.scored_by,
    }
    return {key: value for key, value in options.items() if value}


def _shrink(run: PruneRun) -> None:
    """Physical removal of channels, heads or layers, verified against the masked model."""
    from secateurs.structural import shrink

    args, loaded = run.args, run.loaded
    assert loaded is not None
    criterion = _shrink_criterion(run)
    report = shrink(
        run.model,
        loaded.example_inputs,
        args.amount,
        granularity=args.granularity,
        method=criterion,
        scope=args.scope,
        **_shrink_options(args),
        aggregate="mean" if args.granularity == "layer" and args.method in DATA_METHODS else "sum",
    )
    details = report.to_dict()
    run.result.update(
        {
            "max_abs_diff": report.max_abs_diff,
            "shrink": {
                "groups_cut": sum(g.after < g.before for g in report.groups),
                "groups": len(report.groups),
                **{k: details[k] for k in ("tolerance", "params_ratio", "macs_ratio", "removed_layers", "seconds", "warnings")},
            },
        }
    )
    _record(run, criterion=repr(criterion), shrink=True, max_abs_diff=report.max_abs_diff, params=report.params_after)


def _recover(run: PruneRun) -> None:
    """Prune on the schedule while fine-tuning on the model's own training data."""
    from secateurs.recovery import recover

    args, loaded = run.args, run.loaded
    assert loaded is not None
    if loaded.training_data is None:
        raise UsageError(
            f"--finetune needs training data, and the CLI knows none for {args.model} ({loaded.task}); "
            "use secateurs.recovery.recover(model, train, test, ...) from Python with your data"
        )
    train, test = loaded.training_data
    criterion = _criterion(args)
    result = recover(
        run.model,
        train,
        test,
        amount=args.amount,
        epochs=args.finetune,
        schedule=args.schedule,
        method=criterion,
        granularity=args.granularity,
        scope=args.scope,
        example_inputs=loaded.example_inputs,
        distill=args.distill,
        seed=args.seed if args.seed is not None else 0,
        checkpoint_dir=args.checkpoint_dir,
        lr=args.lr,
        shrink=args.shrink,
        prune_options=_shrink_options(args) if args.shrink else {"include": args.include, "exclude": args.exclude},
    )
    loaded.model = result.model if result.model is not None else loaded.model
    reports = [event.report for event in result.events if event.report is not None]
    run.reports.extend(reports)
    summary = result.to_dict()
    run.result.update(
        {
            key: summary[key]
            for key in ("accuracy_dense", "accuracy_pruned", "accuracy_finetuned", "recovered", "schedule", "epochs")
        }
    )
    _record(
        run, criterion=repr(criterion), schedule=summary["schedule"], finetune_epochs=args.finetune, lr=args.lr,
        distill=args.distill, accuracy_dense=result.accuracy_dense, accuracy_pruned=result.accuracy_pruned,
        accuracy_finetuned=result.accuracy_finetuned, sparsity=result.sparsity,
    )


def _measure_after(run: PruneRun) -> None:
    run.after = _measure(run)
    if run.args.evaluate and run.loaded and run.loaded.evaluate:
        run.metrics_after = run.loaded.evaluate(run.model)


def _save(run: PruneRun) -> None:
    loaded = run.loaded
    assert loaded is not None
    run.saved = save_pruned(
        run.model,
        run.args.out,
        source=loaded.spec,
        input_shape=loaded.input_shape,
        task=loaded.task,
        pruning=run.records,
        weights_format=run.args.format,
        overwrite=run.args.overwrite,
        extra={
            "command": shlex.join(["secateurs", *run.args.argv]),
            "before": run.before.to_dict() if run.before else None,
            "after": run.after.to_dict() if run.after else None,
            "metrics_before": run.metrics_before,
            "metrics_after": run.metrics_after,
        },
    )


PRUNE_STEPS: list[Step] = [
    Step("check", _check_request),
    Step("load", _load, message="loading {args.model}"),
    Step("measure-before", _measure_before, message="measuring the model"),
    Step("prune", _prune, enabled=lambda args: not (args.finetune or args.shrink or _uses_data(args)), message="pruning"),
    Step(
        "prune-with-data",
        _prune_with_data,
        enabled=lambda args: not args.finetune and not args.shrink and _uses_data(args),
        message="pruning with {args.method} on the calibration set",
    ),
    Step("shrink", _shrink, enabled=lambda args: args.shrink and not args.finetune, message="removing {args.granularity}s"),
    Step("recover", _recover, enabled=lambda args: bool(args.finetune), message="pruning and fine-tuning"),
    Step("measure-after", _measure_after, message="measuring the pruned model"),
    Step("save", _save, enabled=lambda args: args.out is not None, message="saving to {args.out}"),
]


def add_prune_step(step: Step, *, after: str | None = None, before: str | None = None) -> None:
    """Insert a step into ``secateurs prune``'s pipeline, next to a named one (default: at the end)."""
    names = [s.name for s in PRUNE_STEPS]
    if step.name in names:
        raise ValueError(f"a prune step named {step.name!r} exists already")
    anchor = after or before
    if anchor is not None and anchor not in names:
        raise ValueError(f"no prune step named {anchor!r}; steps: {', '.join(names)}")
    index = len(PRUNE_STEPS) if anchor is None else names.index(anchor) + (1 if after else 0)
    PRUNE_STEPS.insert(index, step)


def prune_result(run: PruneRun) -> dict[str, Any]:
    """The JSON object ``secateurs prune --json`` prints."""
    before, after, loaded = run.before, run.after, run.loaded
    assert before is not None and after is not None and loaded is not None
    last = run.reports[-1] if run.reports else None
    return {
        "model": run.args.model,
        "source": loaded.spec,
        "task": loaded.task,
        "input_shape": list(loaded.input_shape) if loaded.input_shape else None,
        "method": run.args.method,
        "granularity": run.args.granularity,
        "scope": run.args.scope,
        "amount": run.args.amount,
        "seed": run.args.seed,
        "params_before": before.params,
        "params_after": after.params,
        "nonzero_before": before.nonzero,
        "nonzero_after": after.nonzero,
        "sparsity": after.sparsity,
        "pruned_sparsity": last.sparsity if last else 0.0,
        "layers_pruned": len(last.layers) if last else 0,
        "layers_skipped": [{"name": s.name, "reason": s.reason} for s in last.skipped] if last else [],
        "macs_before": before.macs,
        "macs_after": after.macs,
        "nonzero_macs_after": after.nonzero_macs,
        "latency_ms_before": before.latency_ms,
        "latency_ms_after": after.latency_ms,
        "latency_threads": after.latency.threads if after.latency else None,
        "size_bytes_before": before.size.dense_bytes,
        "size_bytes_after": after.size.sparse_bytes,
        "dense_bytes_after": after.size.dense_bytes,
        "metrics_before": run.metrics_before,
        "metrics_after": run.metrics_after,
        "output_dir": str(run.saved.path) if run.saved else None,
        "files": run.saved.files if run.saved else None,
        "seconds": run.seconds,
        **run.result,
    }


def _human_count(value: float, unit: str = "") -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {suffix}{unit}"
    return f"{value:,.0f} {unit}".rstrip()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _human_bytes(value: int) -> str:
    for threshold, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= threshold:
            return f"{value / threshold:.1f} {suffix}"
    return f"{value} B"


def _row(label: str, before: str, after: str, note: str = "") -> str:
    return f"{label:<14}{before:>14}{after:>14}   {note}".rstrip()


def format_prune_result(run: PruneRun) -> str:
    """The human-readable report of ``secateurs prune``."""
    r = prune_result(run)
    amount = "N:M" if r["amount"] is None else r["amount"]
    if "shrink" in r:
        shrunk = r["shrink"]
        removed = shrunk["removed_layers"]
        cut = _plural(len(removed), "block") + " removed" if removed else f"{shrunk['groups_cut']}/{shrunk['groups']} groups cut"
        pruned = f"{cut}, physically; max |shrunk - masked| = {r['max_abs_diff']:.2g} (tolerance {shrunk['tolerance']:.2g})"
        verb = "Shrunk"
    else:
        pruned = f"{_plural(r['layers_pruned'], 'layer')} pruned to {r['pruned_sparsity']:.1%}, {len(r['layers_skipped'])} left alone"
        verb = "Pruned"
    lines = [
        f"{verb} {r['model']} ({r['task']}): {r['method']}, {r['granularity']}, {r['scope']}, amount {amount}; {pruned}",
        "",
        _row("", "before", "after"),
        _row("parameters", f"{r['params_before']:,}", f"{r['params_after']:,}"),
        _row(
            "nonzero",
            f"{r['nonzero_before']:,}",
            f"{r['nonzero_after']:,}",
            f"{r['sparsity']:.1%} of all parameters are zero",
        ),
        _row(
            "MACs",
            _human_count(r["macs_before"]),
            _human_count(r["macs_after"]),
            f"{_human_count(r['nonzero_macs_after'])} touch a nonzero weight",
        ),
    ]
    if r["latency_ms_before"] is not None:
        note = f"median, {_plural(r['latency_threads'], 'thread')}"
        lines.append(_row("latency", f"{r['latency_ms_before']:.2f} ms", f"{r['latency_ms_after']:.2f} ms", note))
    sizes = _human_bytes(r["size_bytes_before"]), _human_bytes(r["size_bytes_after"])
    lines.append(_row("size on disk", *sizes, "dense safetensors / sparse format"))
    for name, value in (run.metrics_before or {}).items():
        lines.append(_row(name, f"{value:.4f}", f"{(run.metrics_after or {}).get(name, float('nan')):.4f}"))
    if run.args.layers:
        lines += ["", str(run.reports[-1])]
    lines.append("")
    if run.saved:
        files = ", ".join(f"{name} {_human_bytes(size)}" for name, size in run.saved.files.items())
        lines.append(f"Saved to {run.saved.path}/ ({files}, manifest.json)")
    else:
        lines.append("Not saved (give --out DIR to save the pruned model).")
    return "\n".join(lines)


def run_prune(args: argparse.Namespace) -> int:
    run = PruneRun(args)
    for step in PRUNE_STEPS:
        if not step.enabled(args):
            continue
        if step.message:
            _say(step.message.format(args=args))
        start = time.perf_counter()
        step.run(run)
        run.seconds[step.name] = round(time.perf_counter() - start, 3)
    print(json.dumps(prune_result(run), indent=2) if args.json else format_prune_result(run))
    return 0


def add_prune_arguments(parser: ArgumentParser) -> None:
    for add in PRUNE_OPTION_GROUPS:
        add(parser)


# ---- secateurs summary ---------------------------------------------------------------------------


def add_summary_arguments(parser: ArgumentParser) -> None:
    _add_model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--measure", action="store_true", help="also measure parameters, MACs, size on disk and latency"
    )
    _add_measure_options(parser)


def run_summary(args: argparse.Namespace) -> int:
    from secateurs.core.summary import summary

    _say(f"loading {args.model}")
    loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    table = summary(loaded.model)
    measured = (
        measure(
            loaded.model,
            loaded.example_inputs,
            latency=args.latency,
            min_run_time=args.latency_time,
            threads=args.threads,
        )
        if args.measure
        else None
    )
    if args.json:
        payload = {"model": args.model, "source": loaded.spec, "task": loaded.task, **table.to_dict()}
        if loaded.manifest is not None:
            payload["pruning"] = loaded.manifest.pruning
        if measured is not None:
            payload["measurements"] = measured.to_dict()
        print(json.dumps(payload, indent=2))
        return 0
    print(f"{args.model} ({loaded.task}, source {loaded.spec})\n")
    print(table)
    if measured is not None:
        latency = f", latency {measured.latency_ms:.2f} ms" if measured.latency_ms is not None else ""
        print(
            f"\nMACs {_human_count(measured.macs)} ({_human_count(measured.nonzero_macs)} touch a nonzero weight), "
            f"size {_human_bytes(measured.size.dense_bytes)} dense / {_human_bytes(measured.size.sparse_bytes)} sparse{latency}"
        )
    return 0


# ---- secateurs demo ------------------------------------------------------------------------------


def add_demo_arguments(parser: ArgumentParser) -> None:
    from secateurs.demo.datasets import DATASETS
    from secateurs.demo.sweep import DEFAULT_DATASET, DemoConfig

    defaults = DemoConfig()
    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default=DEFAULT_DATASET,
        help="packaged data set to train on (default %(default)s)",
    )
    parser.add_argument(
        "--ratios",
        default=",".join(f"{r:g}" for r in defaults.ratios),
        metavar="R,R,...",
        help="pruning ratios (default %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.train.epochs,
        help="training epochs of the CNN (default %(default)s; part of the cache key)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the random pruning methods (default %(default)s)"
    )
    parser.add_argument("--retrain", action="store_true", help="train again even when a cached model exists")
    parser.add_argument(
        "--latency-time",
        type=positive_float,
        default=defaults.latency_min_run_time,
        metavar="SECONDS",
        help="minimum timing per pruned model (default %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=defaults.threads,
        metavar="N",
        help="threads while timing (default %(default)s: stable on shared machines)",
    )
    parser.add_argument(
        "--compact", action="store_true", help="print the accuracy matrix and the reading, not the full table"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object (rows, dense model, reading)")


def run_demo_command(args: argparse.Namespace) -> int:
    from secateurs.demo.sweep import default_config, format_report, parse_ratios, run_demo

    config = default_config(
        dataset=args.dataset,
        ratios=parse_ratios(args.ratios),
        epochs=args.epochs,
        seed=args.seed,
        retrain=args.retrain,
        latency_min_run_time=args.latency_time,
        threads=args.threads,
    )
    result = run_demo(config, progress=args.progress)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result, full=not args.compact))
    return 0


# ---- commands and main ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    add_arguments: Callable[[ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str = ""


COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> None:
    COMMANDS[command.name] = command


register_command(
    Command(
        "prune",
        "prune a model, measure it before and after, save it",
        "Prune MODEL with masks, measure parameters, nonzeros, MACs, latency and size before and after, and save it (--out).",
        add_prune_arguments,
        run_prune,
        epilog=(
            "examples:\n"
            "  secateurs prune torchvision:resnet18 --amount 0.5 --out resnet18-50\n"
            "  secateurs prune demo --method l2 --granularity channel --amount 0.3 --json\n"
            "  secateurs prune minilm --granularity 2:4 --exclude '*attention*' --out minilm-24\n"
            "  secateurs prune resnet18-50 --amount 0.7 --scope global --out resnet18-70"
        ),
    )
)
register_command(
    Command(
        "summary",
        "print the per-layer sparsity table of a model",
        "Per-layer parameters, nonzeros, sparsity and all-zero rows/columns of MODEL (e.g. a directory written by secateurs prune).",
        add_summary_arguments,
        run_summary,
        epilog="examples:\n  secateurs summary resnet18-50\n  secateurs summary torchvision:mobilenet_v3_small --measure --json",
    )
)
register_command(
    Command(
        "demo",
        "train a small CNN on a packaged data set and prune it 90 ways",
        "The seed articles' experiment offline: random/L1 unstructured and random/L2 structured pruning at ratios 0.1-0.9, "
        "local and global, each evaluated for accuracy, nonzeros, size on disk and latency. The trained CNN is cached "
        "(under $SECATEURS_CACHE, default ~/.cache/secateurs).",
        add_demo_arguments,
        run_demo_command,
        epilog="examples:\n  secateurs demo\n  secateurs demo --dataset mnist1d --compact\n  secateurs demo --ratios 0.5,0.9 --json",
    )
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="secateurs",
        description="Prune PyTorch networks and measure what it buys.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"secateurs {__version__}")
    _add_common_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        _add_common_options(sub)
        sub.set_defaults(handler=command.run)
    return parser


def _error(message: str, code: int) -> int:
    print(f"secateurs: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secateurs`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not debug:  # keep the output to what secateurs says
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.handler(args)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line (or a traceback with --debug)
        if isinstance(exc, SystemExit):
            raise
        if debug:
            traceback.print_exc()
        code = EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE
        known = isinstance(exc, (SecateursError, OSError))
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
            message += f": {exc.filename}"
        message = " ".join(message.split()) or type(exc).__name__
        if not known and not debug:
            message += " (run with --debug for the traceback)"
        return _error(message, code)


if __name__ == "__main__":
    sys.exit(main())
