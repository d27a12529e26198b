"""The prune pipeline, shared by ``secateurs prune`` and a recipe's pruning steps: check, load, measure, prune
(with masks, with data, physically, or while fine-tuning), measure, save. Each step translates options into one
library call; what is pruned and how is the library's decision.

The options are a plain object with the attributes of :data:`secateurs.recipes.options.PRUNE_GROUPS` (an
argparse Namespace, or a recipe step's validated options); refusals are :class:`OptionError`. A new step is a
:class:`Step` placed with :func:`add_prune_step`; steps share state through :class:`PruneRun`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.analysis import (
    Allocation,
    Metric,
    allocate,
    check_metric_spec,
    parse_metric,
    resolve_calibration,
)
from secateurs.core.criteria import Criterion, get_criterion
from secateurs.core.engine import PruneReport, prune
from secateurs.data import (
    Calibration,
    TokenizerNeededError,
    available_methods,
    load_calibration,
    prune_with_data,
    sample_examples,
    unit_criterion,
)
from secateurs.measure import LatencyComparison, Measurements, compare_latency, measure
from secateurs.recipes.errors import OptionError
from secateurs.recipes.options import measure_options
from secateurs.recipes.progress import interactive, say
from secateurs.recipes.prune_checks import (
    check_in_memory_request,
    check_request,
    check_stream_request,
    checkpoint_directory,
    streaming_reason,
    uses_data,
)
from secateurs.recovery import recover
from secateurs.sources import LoadedModel, load_model, portable_files
from secateurs.storage import SavedModel, check_output_dir, estimated_bytes, save_pruned
from secateurs.streaming import (
    DepthReport,
    MemoryBudgetError,
    ResumeError,
    StreamReport,
    prune_streaming,
    prune_streaming_depth,
)
from secateurs.structural import ShrinkReport, shrink
from secateurs.version import __version__


@dataclass
class PruneRun:
    """State shared by the steps of the prune pipeline; ``loaded`` given up front (a recipe's model, already in
    memory) is pruned as it is, instead of loading ``args.model``."""

    args: argparse.Namespace
    loaded: LoadedModel | None = None
    #: What was run, as the saved manifest records it (the command line, or the recipe and its step).
    command: str | None = None
    before: Measurements | None = None
    after: Measurements | None = None
    #: An untouched copy of the model as loaded, kept only to be timed against the pruned model.
    dense: nn.Module | None = None
    #: The model as loaded ("before") and pruned ("after"), timed interleaved in one comparison.
    latency: LatencyComparison | None = None
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    reports: list[PruneReport] = field(default_factory=list)
    #: Pruning records, oldest first; saved as the manifest's ``pruning`` list.
    records: list[dict[str, Any]] = field(default_factory=list)
    saved: SavedModel | None = None
    #: Per-layer amounts chosen for --target or --max-drop, for the pruning step.
    allocation: Allocation | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: What a streamed run (--stream) did: masks, or whole blocks removed; None when the model was pruned in memory.
    streamed: StreamReport | DepthReport | None = None
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
    #: Whether the step also runs when the model is streamed (--stream), which never loads it whole.
    streamed: bool = False


# ---- how options map to library arguments --------------------------------------------------------


def _seed(args: argparse.Namespace) -> dict[str, int]:
    """``seed=`` when --seed was given; otherwise each library call keeps its own default."""
    return {} if args.seed is None else {"seed": args.seed}


def _criterion(args: argparse.Namespace) -> Criterion:
    """The data-free criterion --method names, with --norm and --seed."""
    options: dict[str, Any] = {"n": args.norm} if args.method in ("ln", "norm") else {}
    return get_criterion(args.method, **options, **_seed(args))


def _calibration_source(run: PruneRun) -> Any:
    """The --calibration source as :mod:`secateurs.data` takes it; ``train`` is the model's own training data."""
    args, loaded = run.args, run.loaded_model
    if args.calibration != "train":
        return args.calibration
    if loaded.training_data is None:
        raise OptionError("calibration",
            f"--calibration train: the CLI knows no training data for {args.model}; give the task's own data "
            "(e.g. csv:FILE:COLUMN, images:DIR), a text file or english"
        )
    train = loaded.training_data[0]
    return sample_examples(train, args.calibration_samples, **_seed(args)) if isinstance(train, tuple) else train


def _calibration_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of :func:`secateurs.data.load_calibration` that --tokenizer, --calibration-samples, --seq-len
    and --seed give (the streamed path passes them to :func:`secateurs.streaming.prune_streaming`)."""
    return {"tokenizer": args.tokenizer, "num_samples": args.calibration_samples, "seq_len": args.seq_len, **_seed(args)}


@contextlib.contextmanager
def _tokenizer_named(args: argparse.Namespace) -> Iterator[None]:
    """A missing tokenizer, told as the option that supplies one."""
    try:
        yield
    except TokenizerNeededError:
        raise OptionError("calibration",
            f"--calibration {args.calibration} is text, and no tokenizer was found for {args.model}: add "
            "--tokenizer PATH (the directory of a saved Hugging Face tokenizer)"
        ) from None


def _calibration(run: PruneRun) -> Calibration:
    """The calibration set, shaped by --calibration-samples, --tokenizer, --seq-len and --seed (images are
    sized to the model's input shape)."""
    with _tokenizer_named(run.args):
        return load_calibration(_calibration_source(run), run.model, input_shape=run.loaded_model.input_shape,
                                **_calibration_options(run.args))  # fmt: skip


def _picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named options as keyword arguments of the library call they share their names with."""
    return {name: getattr(args, name) for name in names}


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    """``scope=`` when --scope was given; otherwise the library function's own default decides."""
    return {} if args.scope is None else {"scope": args.scope}


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options :func:`secateurs.prune_with_data` and :func:`secateurs.streaming.prune_streaming` share, besides
    the calibration set and the amount."""
    return _picked(args, "method", "granularity", "allocation", "scope", "include", "exclude", "device", "allow_noop")


def weights_format(args: argparse.Namespace) -> str:
    """--format: by default sparse in memory (secateurs' own directory), dense streamed (plain from_pretrained)."""
    return args.format or ("dense" if args.stream else "sparse")


def _mask_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`secateurs.prune` besides the criterion, amount, granularity and scope."""
    return _picked(args, "normalize_scores", "include", "exclude", "allow_noop")


def _shrink_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`secateurs.shrink` (also used between fine-tuning cycles)."""
    return _picked(args, "exclude", "round_to", "prune_normalized", "scored_by", "normalize_scores", "allow_noop")


def _record(run: PruneRun, report: PruneReport | None = None, **extra: Any) -> None:
    """Keep a pruning step's report, and its record for the manifest (what was asked, plus ``extra``)."""
    args = run.args
    if report is not None:
        run.reports.append(report)
    run.records.append(
        {
            "method": args.method,
            "granularity": args.granularity,
            "scope": getattr(report, "scope", args.scope),
            "normalize_scores": args.normalize_scores,
            "amount": args.amount,
            "seed": args.seed,
            "include": args.include,
            "exclude": args.exclude,
            "target": None if run.allocation is None else run.allocation.to_dict(),
            **extra,
            "secateurs_version": __version__,
        }
    )


# ---- the steps -----------------------------------------------------------------------------------


def _check(run: PruneRun) -> None:
    check_request(run.args, check_model=run.loaded is None)


def _load(run: PruneRun) -> None:
    """Load the model (unless it was given), then check there is room for what --out will hold before any pruning."""
    args = run.args
    if run.loaded is None:
        run.loaded = load_model(args.model, input_shape=args.input_shape).to(args.device)
    if run.loaded.manifest is not None and not run.records:  # records given: a recipe's earlier steps
        run.records = list(run.loaded.manifest.pruning)
    if args.out is not None:
        check_output_dir(args.out, args.overwrite, needed_bytes=estimated_bytes(run.model, weights_format(args)))


def _measure(run: PruneRun) -> tuple[Measurements, dict[str, float] | None]:
    """Measurements of the model as it is now, without timing (done once, in :func:`_measure_after`), and its
    task metric when asked for and known."""
    args, loaded = run.args, run.loaded_model
    measured = measure(loaded.model, loaded.example_inputs, latency=False)
    metrics = loaded.evaluate(loaded.model) if args.evaluate and loaded.evaluate else None
    return measured, metrics


def _measure_before(run: PruneRun) -> None:
    """Measure the model as loaded and, when latency is asked for, keep an untouched copy of it to time the
    pruned model against. The copy doubles the model's memory; ``--no-latency`` avoids it."""
    run.before, run.metrics_before = _measure(run)
    if run.args.latency:
        run.dense = copy.deepcopy(run.model)


def _measure_after(run: PruneRun) -> None:
    """Measure the pruned model, and time it against the copy of the model as loaded in one interleaved
    comparison (never apart: load from other work must hit both alike); the copy is let go afterwards."""
    run.after, run.metrics_after = _measure(run)
    if run.dense is None:
        return
    assert run.before is not None, "measure-before runs first"
    models = {"before": run.dense, "after": run.model}
    run.latency = compare_latency(models, run.loaded_model.example_inputs, **measure_options(run.args))
    run.dense = None
    run.before = run.before.with_latency(run.latency["before"])
    run.after = run.after.with_latency(run.latency["after"])


def _prune(run: PruneRun) -> None:
    """Masks with a data-free criterion (:func:`secateurs.prune`)."""
    args = run.args
    criterion = _criterion(args)
    report = prune(
        run.model,
        args.amount,
        method=criterion,
        granularity=args.granularity,
        **{**_scope(args), **_mask_options(args), **_allocated(run)},
    )
    _record(
        run, report, criterion=repr(criterion), layers_pruned=len(report.layers), layers_skipped=len(report.skipped),
        params=report.params, zeros=report.zeros, sparsity=report.sparsity,
    )  # fmt: skip


def _prune_with_data(run: PruneRun) -> None:
    """Wanda, SparseGPT, Taylor or OWL-allocated pruning, block by block on the calibration set."""
    args = run.args
    report = prune_with_data(
        run.model, _calibration(run), args.amount, **{**_data_options(args), **_allocated(run)}, progress=interactive(),
        **_seed(args),
    )  # fmt: skip
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
        progress=interactive(),
    )


def _shrink_result(report: ShrinkReport) -> dict[str, Any]:
    """The keys --shrink adds to the JSON output."""
    details = report.to_dict()
    kept = ("tolerance", "params_ratio", "macs_ratio", "removed_layers", "seconds", "warnings")
    verification = {"verified": report.verified, "verification": report.verification}
    return {
        "max_abs_diff": report.max_abs_diff,
        "shrink": {
            "groups_cut": sum(g.after < g.before for g in report.groups),
            "groups": len(report.groups),
            **verification,
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
        args.amount if run.allocation is None else 0.0,  # the allocation names every group
        granularity=args.granularity,
        method=criterion,
        **{**_scope(args), **_shrink_options(args), **_allocated(run)},
    )
    run.result.update(_shrink_result(report))
    _record(run, criterion=repr(criterion), shrink=True, scope=report.scope, max_abs_diff=report.max_abs_diff,
            params=report.params_after)


def _recover(run: PruneRun) -> None:
    """Prune on the schedule while fine-tuning on the model's own training data."""
    args, loaded = run.args, run.loaded_model
    if loaded.training_data is None:
        raise OptionError("finetune",
            f"--finetune needs training data, and the CLI knows none for {args.model} ({loaded.task}); "
            "use secateurs.recovery.recover(model, train, test, ...) from Python with your data"
        )
    train, test = loaded.training_data
    criterion = _criterion(args)
    result = recover(
        run.model,
        train,
        test,
        amount=args.amount if run.allocation is None else _schedule_end(run.allocation.per_layer),
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
        prune_options={**(_shrink_options(args) if args.shrink else _mask_options(args)), **_allocated(run)},
        **_seed(args),
    )
    loaded.model = result.model if result.model is not None else loaded.model
    run.reports.extend(event.report for event in result.events if event.report is not None)
    summary = result.to_dict()
    kept = ("accuracy_dense", "accuracy_pruned", "accuracy_finetuned", "recovered", "schedule", "epochs")
    run.result.update({key: summary[key] for key in kept})
    _record(
        run, criterion=repr(criterion), scope=_used_scope(result.events, args.scope), schedule=summary["schedule"], finetune_epochs=args.finetune, lr=args.lr,
        distill=args.distill, accuracy_dense=result.accuracy_dense, accuracy_pruned=result.accuracy_pruned,
        accuracy_finetuned=result.accuracy_finetuned, sparsity=result.sparsity,
    )  # fmt: skip


def _schedule_end(per_layer: dict[str, float | int]) -> float:
    """The sparsity a schedule towards allocated per-layer amounts ends at: each cut takes its share of every
    layer's amount (:class:`~secateurs.recovery.PruningController`), so the largest fraction stands for the end."""
    fractions = [amount for amount in per_layer.values() if isinstance(amount, float)]
    return max(fractions, default=1.0) or 1.0


def _used_scope(events: list, asked: str | None) -> str | None:
    """The scope the fine-tuning schedule's cuts ranked with (the library's default when --scope was not given)."""
    scopes = [getattr(event.report, "scope", None) for event in events]
    return next((scope for scope in reversed(scopes) if scope), asked)


def _save(run: PruneRun) -> None:
    args, loaded = run.args, run.loaded_model
    run.saved = save_pruned(
        run.model,
        args.out,
        source=loaded.spec,
        input_shape=loaded.input_shape,
        task=loaded.task,
        pruning=run.records,
        weights_format=weights_format(args),
        overwrite=args.overwrite,
        source_files=portable_files(loaded.spec),
        extra={
            "command": run.command,
            "before": run.before.to_dict() if run.before else None,
            "after": run.after.to_dict() if run.after else None,
            "metrics_before": run.metrics_before,
            "metrics_after": run.metrics_after,
        },
    )


# ---- pruning to a target ---------------------------------------------------------------------------


def _allocation_source(args: argparse.Namespace) -> str:
    """--allocate-from, by default sensitivity when a metric is named (--eval, --max-drop), else the proxy."""
    if args.allocate_from is not None:
        return args.allocate_from
    return "sensitivity" if args.metric is not None or args.max_drop is not None else "proxy"


def _check_target(run: PruneRun) -> None:
    """Refuse --target, --max-drop, --eval and --allocate-from combinations that cannot work, before loading."""
    args = run.args
    if args.target is None and args.max_drop is None:
        if args.metric is not None or args.allocate_from is not None:
            raise OptionError("eval", "--eval and --allocate-from shape pruning to a target: add --target KIND=RATIO or --max-drop POINTS")
        return
    refusals = {
        "--target and --max-drop choose each layer's amount: drop --amount": args.amount is not None,
        "--target with --finetune --shrink cuts each layer's allocated channels in one go: add --schedule oneshot, "
        "or drop --shrink (masks reach the allocation gradually)": bool(args.finetune) and args.shrink
            and args.schedule != "oneshot",
        "--scope global ranks across layers itself; --target chooses each layer's amount: drop --scope global":
            args.scope == "global",
        "--target does not plan --prune-normalized widths: drop --prune-normalized": args.prune_normalized,
        "--allocation owl sets each block's sparsity itself: drop it with --target": args.allocation == "owl",
        "--target latency needs units removed for real: add --shrink (masks leave dense kernels as slow as before)":
            args.target is not None and args.target.kind == "latency" and not args.shrink,
    }  # fmt: skip
    for message, refused in refusals.items():
        if refused:
            raise OptionError("target", message)
    _check_allocation_source(args)


def _check_allocation_source(args: argparse.Namespace) -> None:
    source = _allocation_source(args)
    if args.max_drop is not None and args.metric is None:
        raise OptionError("max_drop", "--max-drop is in points of a metric: add --eval demo (or sts:FILE, imagefolder:DIR, "
                         "python:MODULE:FUNCTION, proxy)")
    if args.metric is not None and source != "sensitivity":
        raise OptionError("eval", f"--eval feeds --allocate-from sensitivity, not {source}: drop --eval or --allocate-from {source}")
    if args.target is None and source != "sensitivity":
        raise OptionError("max_drop", f"--max-drop alone needs --allocate-from sensitivity (a scan measures the drop), not {source}")


def _allocation_metric(run: PruneRun) -> Metric | None:
    """The metric a sensitivity scan reads: --eval, by default the proxy on the model's training data."""
    args, loaded = run.args, run.loaded_model
    if _allocation_source(args) != "sensitivity":
        return None
    calibration = resolve_calibration(loaded, None, num_samples=args.calibration_samples, **_seed(args))
    return parse_metric(args.metric or check_metric_spec("proxy"), loaded, calibration=calibration,
                        samples=args.eval_samples)


def _allocate(run: PruneRun) -> None:
    """Per-layer amounts that reach --target (or spend --max-drop), for the pruning step after this one."""
    args, loaded = run.args, run.loaded_model
    with_data = uses_data(args)
    run.allocation = allocate(
        loaded.model, loaded.example_inputs, args.target, granularity=args.granularity,
        source=_allocation_source(args), metric=_allocation_metric(run),
        method=args.method if with_data else _criterion(args), calibration=_calibration(run) if with_data else None,
        max_drop=args.max_drop, units=args.include, exclude=args.exclude, round_to=args.round_to,
        threads=args.threads, progress=interactive(),
    )  # fmt: skip


def _allocated(run: PruneRun) -> dict[str, Any]:
    """The allocation as pruning arguments: ``per_layer``, ``include`` for N:M, ``per_layer`` and the blocks kept
    (``exclude``, with the user's own) for whole blocks; nothing without a target."""
    allocation = run.allocation
    if allocation is None:
        return {}
    if allocation.include is not None:
        return {"include": allocation.include}
    if allocation.exclude is not None:
        return {"per_layer": allocation.per_layer, "exclude": [*allocation.exclude, *(run.args.exclude or [])]}
    return {"per_layer": allocation.per_layer}


# ---- streaming: models larger than memory ---------------------------------------------------------------

#: --activations-dtype's values.
ACTIVATION_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _choose_streaming(run: PruneRun) -> None:
    """Stream when --stream says so or, without --stream/--no-stream, when an hf:DIR checkpoint would not fit in
    memory (said on stderr, with the sizes); then refuse what the chosen path cannot do, before any loading."""
    args = run.args
    reason = streaming_reason(args) if args.stream is None and run.loaded is None else None
    args.stream = bool(args.stream) or reason is not None
    if not args.stream:
        check_in_memory_request(args)
        return
    try:
        check_stream_request(args, in_recipe=run.loaded is not None)
    except OptionError as exc:
        if reason is None:
            raise
        message = f"{reason}, so it would be streamed, but {exc} (or add --no-stream to load it anyway)"
        raise OptionError(exc.key, message) from None
    if reason is not None:
        run.result["stream_reason"] = reason
        print(f"secateurs: {reason}: streaming it block by block (--no-stream loads it anyway)", file=sys.stderr, flush=True)


def _streamed_options(args: argparse.Namespace) -> dict[str, Any]:
    """What every streamed run takes: the calibration options, --max-memory and --activations-dtype."""
    activations_dtype = ACTIVATION_DTYPES.get(args.activations_dtype)
    # progress=True: per-block lines in logs too, which long runs need
    return {**_calibration_options(args), "max_memory": args.max_memory, "activations_dtype": activations_dtype,
            "progress": True}  # fmt: skip


def _stream(run: PruneRun) -> None:
    """Prune the hf:DIR checkpoint block by block into --out: masks (:func:`secateurs.streaming.prune_streaming`),
    or whole blocks by their influence with --granularity layer (:func:`secateurs.streaming.prune_streaming_depth`)."""
    args = run.args
    directory = checkpoint_directory(args.model)
    try:
        with _tokenizer_named(args):
            if args.granularity == "layer":
                run.streamed = prune_streaming_depth(
                    directory, args.out, args.calibration, args.amount, exclude=args.exclude, device=args.device,
                    resume=not args.overwrite, **_streamed_options(args),
                )  # fmt: skip
            else:
                run.streamed = prune_streaming(
                    directory, args.out, args.calibration, args.amount, **_data_options(args), **_streamed_options(args),
                    weights_format=weights_format(args), resume=not args.overwrite,
                )  # fmt: skip
    except ResumeError as exc:
        raise OptionError("overwrite", f"{str(exc).split(';')[0]}; add --overwrite to start over, or choose another --out") from None
    except MemoryBudgetError as exc:
        needed = str(exc).split(";")[0]
        raise OptionError("max_memory",
            f"{needed}; use fewer --calibration-samples, a shorter --seq-len, --activations-dtype bfloat16, --method "
            "wanda instead of sparsegpt (no Hessians), or a larger --max-memory"
        ) from None  # fmt: skip
    if isinstance(run.streamed, StreamReport):
        run.reports.append(run.streamed.prune)


# ---- the registry --------------------------------------------------------------------------------


PRUNE_STEPS: list[Step] = [
    Step("choose-stream", _choose_streaming, streamed=True),
    Step("check", _check, streamed=True),
    Step("check-target", _check_target, streamed=True),
    Step(
        "stream", _stream, enabled=lambda args: bool(args.stream), streamed=True,
        message="pruning {args.model} block by block into {args.out}",
    ),
    Step("load", _load, message="loading {args.model}"),
    Step("measure-before", _measure_before, message="measuring the model"),
    Step(
        "allocate",
        _allocate,
        enabled=lambda args: args.target is not None or args.max_drop is not None,
        message="choosing each layer's amount",
    ),
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
    """Run the enabled steps in order (in a streamed run, only those marked ``streamed``), each announced to people
    at a terminal and timed into ``run.seconds``."""
    for step in PRUNE_STEPS:
        if not step.enabled(run.args) or (run.args.stream and not step.streamed):
            continue
        if step.message:
            say(step.message.format(args=run.args))
        start = time.perf_counter()
        step.run(run)
        run.seconds[step.name] = round(time.perf_counter() - start, 3)
