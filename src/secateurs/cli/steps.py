"""The pipeline of ``secateurs prune``: load, measure, prune (with masks, with data, physically, or while
fine-tuning), measure, save. Each step translates options into one library call; what is pruned and
how is the library's decision.

A new step is a :class:`Step` placed with :func:`add_prune_step`; steps share state through :class:`PruneRun`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from secateurs.cli.checks import check_request, uses_data
from secateurs.cli.command import UsageError
from secateurs.cli.options import measure_options
from secateurs.cli.output import interactive, say
from secateurs.core.criteria import Criterion, get_criterion
from secateurs.core.engine import PruneReport, prune
from secateurs.data import available_methods, prune_with_data, sample_examples, unit_criterion
from secateurs.measure import Measurements, measure
from secateurs.recovery import recover
from secateurs.sources import LoadedModel, load_model
from secateurs.storage import SavedModel, save_pruned
from secateurs.structural import ShrinkReport, shrink
from secateurs.version import __version__


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
    def loaded_model(self) -> LoadedModel:
        """The loaded model with its example inputs and data (for steps after ``load``)."""
        assert self.loaded is not None, "the load step runs first"
        return self.loaded

    @property
    def model(self) -> Any:
        return self.loaded_model.model


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: ``run`` updates the :class:`PruneRun` when ``enabled`` holds for the
    parsed arguments; ``message`` (formatted with ``args``) tells people at a terminal what is going on."""

    name: str
    run: Callable[[PruneRun], None]
    enabled: Callable[[argparse.Namespace], bool] = lambda args: True
    message: str = ""


# ---- how options map to library arguments --------------------------------------------------------


def _seed(args: argparse.Namespace) -> dict[str, int]:
    """``seed=`` when --seed was given; otherwise each library call keeps its own default."""
    return {} if args.seed is None else {"seed": args.seed}


def _criterion(args: argparse.Namespace) -> Criterion:
    """The data-free criterion --method names, with --norm and --seed."""
    options: dict[str, Any] = {"n": args.norm} if args.method in ("ln", "norm") else {}
    return get_criterion(args.method, **options, **_seed(args))


def _calibration(run: PruneRun) -> Any:
    """The --calibration source as :mod:`secateurs.data` takes it; ``train`` is the model's own training data."""
    args, loaded = run.args, run.loaded_model
    if args.calibration != "train":
        return os.path.expanduser(args.calibration)
    if loaded.training_data is None:
        raise UsageError(f"--calibration train: the CLI knows no training data for {args.model}; give a text file or english")
    train = loaded.training_data[0]
    return sample_examples(train, args.calibration_samples, **_seed(args)) if isinstance(train, tuple) else train


def _mask_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`secateurs.prune` besides the criterion, amount, granularity and scope."""
    return {"normalize_scores": args.normalize_scores, "include": args.include, "exclude": args.exclude}


def _shrink_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`secateurs.shrink` (also used between fine-tuning cycles)."""
    return {
        "exclude": args.exclude,
        "round_to": args.round_to,
        "prune_normalized": args.prune_normalized,
        "scored_by": args.scored_by,
        "normalize_scores": args.normalize_scores,
    }


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
            "normalize_scores": args.normalize_scores,
            "amount": args.amount,
            "seed": args.seed,
            "include": args.include,
            "exclude": args.exclude,
            **extra,
            "secateurs_version": __version__,
        }
    )


# ---- the steps -----------------------------------------------------------------------------------


def _check(run: PruneRun) -> None:
    check_request(run.args)


def _load(run: PruneRun) -> None:
    run.loaded = load_model(run.args.model, input_shape=run.args.input_shape).to(run.args.device)
    if run.loaded.manifest is not None:
        run.records = list(run.loaded.manifest.pruning)


def _measure(run: PruneRun) -> tuple[Measurements, dict[str, float] | None]:
    """Measurements of the model as it is now, and its task metric when asked for and known."""
    args, loaded = run.args, run.loaded_model
    measured = measure(loaded.model, loaded.example_inputs, **measure_options(args))
    metrics = loaded.evaluate(loaded.model) if args.evaluate and loaded.evaluate else None
    return measured, metrics


def _measure_before(run: PruneRun) -> None:
    run.before, run.metrics_before = _measure(run)


def _measure_after(run: PruneRun) -> None:
    run.after, run.metrics_after = _measure(run)


def _prune(run: PruneRun) -> None:
    """Masks with a data-free criterion (:func:`secateurs.prune`)."""
    args = run.args
    criterion = _criterion(args)
    report = prune(
        run.model,
        args.amount,
        method=criterion,
        granularity=args.granularity,
        scope=args.scope,
        **_mask_options(args),
    )
    _record(
        run, report, criterion=repr(criterion), layers_pruned=len(report.layers), layers_skipped=len(report.skipped),
        params=report.params, zeros=report.zeros, sparsity=report.sparsity,
    )  # fmt: skip


def _prune_with_data(run: PruneRun) -> None:
    """Wanda, SparseGPT, Taylor or OWL-allocated pruning, block by block on the calibration set."""
    args = run.args
    report = prune_with_data(
        run.model,
        _calibration(run),
        args.amount,
        method=args.method,
        granularity=args.granularity,
        allocation=args.allocation,
        scope=args.scope if args.scope == "global" else None,  # local: the method's own comparison group
        include=args.include,
        exclude=args.exclude,
        num_samples=args.calibration_samples,
        device=args.device,
        progress=interactive(),
        **_seed(args),
    )
    _record(
        run, report, allocation=args.allocation, calibration=report.calibration, block_amounts=report.block_amounts,
        sparsity=report.sparsity, seconds=report.seconds,
    )  # fmt: skip


def _unit_criterion(run: PruneRun) -> Criterion:
    """What ranks the units --shrink removes: a data-aware method measures them on the calibration set."""
    args = run.args
    if args.method not in available_methods():
        return _criterion(args)
    return unit_criterion(
        run.model,
        _calibration(run),
        args.method,
        granularity=args.granularity,
        num_samples=args.calibration_samples,
        progress=interactive(),
        **_seed(args),
    )


def _shrink_result(report: ShrinkReport) -> dict[str, Any]:
    """The keys --shrink adds to the JSON output."""
    details = report.to_dict()
    kept = ("tolerance", "params_ratio", "macs_ratio", "removed_layers", "seconds", "warnings")
    return {
        "max_abs_diff": report.max_abs_diff,
        "shrink": {
            "groups_cut": sum(g.after < g.before for g in report.groups),
            "groups": len(report.groups),
            **{key: details[key] for key in kept},
        },
    }


def _shrink(run: PruneRun) -> None:
    """Physical removal of channels, heads or layers, verified against the masked model."""
    args = run.args
    criterion = _unit_criterion(run)
    report = shrink(
        run.model,
        run.loaded_model.example_inputs,
        args.amount,
        granularity=args.granularity,
        method=criterion,
        scope=args.scope,
        **_shrink_options(args),
    )
    run.result.update(_shrink_result(report))
    _record(run, criterion=repr(criterion), shrink=True, max_abs_diff=report.max_abs_diff, params=report.params_after)


def _recover(run: PruneRun) -> None:
    """Prune on the schedule while fine-tuning on the model's own training data."""
    args, loaded = run.args, run.loaded_model
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
        checkpoint_dir=args.checkpoint_dir,
        lr=args.lr,
        shrink=args.shrink,
        prune_options=_shrink_options(args) if args.shrink else _mask_options(args),
        **_seed(args),
    )
    loaded.model = result.model if result.model is not None else loaded.model
    run.reports.extend(event.report for event in result.events if event.report is not None)
    summary = result.to_dict()
    kept = ("accuracy_dense", "accuracy_pruned", "accuracy_finetuned", "recovered", "schedule", "epochs")
    run.result.update({key: summary[key] for key in kept})
    _record(
        run, criterion=repr(criterion), schedule=summary["schedule"], finetune_epochs=args.finetune, lr=args.lr,
        distill=args.distill, accuracy_dense=result.accuracy_dense, accuracy_pruned=result.accuracy_pruned,
        accuracy_finetuned=result.accuracy_finetuned, sparsity=result.sparsity,
    )  # fmt: skip


def _save(run: PruneRun) -> None:
    args, loaded = run.args, run.loaded_model
    run.saved = save_pruned(
        run.model,
        args.out,
        source=loaded.spec,
        input_shape=loaded.input_shape,
        task=loaded.task,
        pruning=run.records,
        weights_format=args.format,
        overwrite=args.overwrite,
        extra={
            "command": shlex.join(["secateurs", *args.argv]),
            "before": run.before.to_dict() if run.before else None,
            "after": run.after.to_dict() if run.after else None,
            "metrics_before": run.metrics_before,
            "metrics_after": run.metrics_after,
        },
    )


# ---- the registry --------------------------------------------------------------------------------


PRUNE_STEPS: list[Step] = [
    Step("check", _check),
    Step("load", _load, message="loading {args.model}"),
    Step("measure-before", _measure_before, message="measuring the model"),
    Step("prune", _prune, enabled=lambda args: not (args.finetune or args.shrink or uses_data(args)), message="pruning"),
    Step(
        "prune-with-data",
        _prune_with_data,
        enabled=lambda args: not args.finetune and not args.shrink and uses_data(args),
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


def run_steps(run: PruneRun) -> None:
    """Run the enabled steps in order, each announced to people at a terminal and timed into ``run.seconds``."""
    for step in PRUNE_STEPS:
        if not step.enabled(run.args):
            continue
        if step.message:
            say(step.message.format(args=run.args))
        start = time.perf_counter()
        step.run(run)
        run.seconds[step.name] = round(time.perf_counter() - start, 3)
