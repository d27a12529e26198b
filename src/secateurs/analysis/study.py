"""Studies: the seed articles' whole experiment on one model, written as a report.

    import secateurs as sc
    from secateurs.analysis import parse_metric, study

    loaded = sc.load_model("demo")
    result = study(loaded, parse_metric("demo", loaded), out_dir="study-demo")   # report.html, summary.md...

One call runs, in order: the dense metric; a sensitivity scan (:func:`secateurs.analysis.sensitivity`, one
curve per layer); the sweep (every method at every amount and scope, each copy measured for the metric,
nonzeros, MACs and latency against dense: :mod:`.study_sweep`); where the model knows its training data,
one-shot pruning against fine-tuned and gradual pruning (:mod:`.study_recovery`); and for a stack of
repeated blocks such as a ViT, per-block sensitivity and the sparing of the most fragile blocks
(:mod:`.blocks`). Every setting is checked before the first evaluation. With ``out_dir`` the report is
written there (:func:`secateurs.analysis.report.write_report`); :class:`StudyResult` holds every number.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from secateurs.analysis.blocks import BlockPlan, block_names, run_block_study
from secateurs.analysis.metrics import Metric, MetricFunction, as_metric
from secateurs.analysis.report import check_report_dir, write_report
from secateurs.analysis.sensitivity import sensitivity
from secateurs.analysis.study_recovery import RecoveryPlan, run_recovery
from secateurs.analysis.study_result import StudyResult
from secateurs.analysis.study_settings import CheckedSettings, check_study_settings
from secateurs.analysis.study_sweep import SweepPlan, method_spec, parse_method, resolve_layers, run_sweep
from secateurs.errors import PruningError
from secateurs.measure import count_params, mac_counts
from secateurs.runtime import torch_threads
from secateurs.sources import LoadedModel

T = TypeVar("T")


@dataclass(frozen=True)
class _Plan:
    sweep: SweepPlan
    recovery: RecoveryPlan | None
    blocks: BlockPlan | None
    block_names: list[str] | None
    notes: list[str]


def study(
    model: nn.Module | LoadedModel,
    metric: Metric | MetricFunction,
    *,
    example_inputs: Any = None,
    training_data: tuple[Any, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    quiet: bool = False,
    **settings: Any,
) -> StudyResult:
    """Run a study of ``model`` (a module, or a :class:`LoadedModel` lending its example inputs and training
    data) scored by ``metric`` (see the module docstring); ``settings`` are
    :class:`~secateurs.analysis.study_settings.StudySettings` fields, checked before anything runs.

    ``example_inputs`` are what MACs and latency are measured on (and what shrinking traces);
    ``training_data`` is ``(train, test)`` for the fine-tuning modes. ``out_dir`` receives the report
    (``overwrite`` replaces an earlier study there). ``progress`` shows progress bars with time estimates;
    ``quiet`` turns them off whatever ``progress`` says. Everything runs on ``threads`` intra-op threads (default
    1: small models train and time steadily so on a shared machine). The model is left as it was.
    """
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else None
    network = loaded.model if loaded is not None else model
    inputs = example_inputs if example_inputs is not None else getattr(loaded, "example_inputs", None)
    training = training_data if training_data is not None else getattr(loaded, "training_data", None)
    checked = check_study_settings(settings)
    metric = as_metric(metric)
    plan = _plan(network, checked, inputs, training)
    target = check_report_dir(out_dir, overwrite) if out_dir is not None else None
    name = loaded.spec if loaded is not None else type(network).__name__
    with torch_threads(checked.threads):
        result = _run(name, network, metric, plan, checked, inputs, training, progress and not quiet)
    result.seconds = time.perf_counter() - started
    if target is not None:
        write_report(result, target)
    return result


def _run(name: str, model: nn.Module, metric: Metric, plan: _Plan, checked: CheckedSettings, inputs: Any,
         training: tuple[Any, Any] | None, progress: bool) -> StudyResult:
    stages: dict[str, float] = {}
    dense = _timed(stages, "dense", lambda: metric(model))
    scan = None
    if checked.sensitivity is not None:
        granularity, amounts = checked.sensitivity, checked.sensitivity_amounts
        scan = _timed(stages, "sensitivity", lambda: sensitivity(
            model, metric, granularity=granularity, amounts=amounts, example_inputs=inputs, progress=progress))
    sweep = _timed(stages, "sweep", lambda: run_sweep(model, metric, inputs, plan.sweep, progress))
    recovery = []
    if plan.recovery is not None and training is not None:
        tuning = plan.recovery
        recovery = _timed(stages, "recovery", lambda: run_recovery(model, metric, training, inputs, tuning, progress))
    blocks = None
    if plan.blocks is not None and plan.block_names is not None:
        spared, names = plan.blocks, plan.block_names
        blocks = _timed(stages, "blocks", lambda: run_block_study(
            model, metric, names, dense, spared, training, progress))
    return StudyResult(
        model=name, metric=metric.name, unit=metric.unit, higher_is_better=metric.higher_is_better, dense=dense,
        dense_params=count_params(model), dense_macs=mac_counts(model, inputs).dense,
        methods=[m.label for m in plan.sweep.methods], rows=sweep.rows, layer_sparsity=sweep.layer_sparsity,
        histograms=sweep.histograms, sensitivity=scan, recovery=recovery, blocks=blocks,
        settings=_recorded(checked, plan), timing=sweep.timing, stages=stages, environment=_environment(),
        notes=[*metric.sample_notes(), *plan.notes],
    )  # fmt: skip


def _timed(stages: dict[str, float], name: str, work: Callable[[], T]) -> T:
    started = time.perf_counter()
    value = work()
    stages[name] = time.perf_counter() - started
    return value


def _environment() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": load}


def _recorded(checked: CheckedSettings, plan: _Plan) -> dict[str, Any]:
    """The settings as run, with every default resolved, in JSON types."""
    recorded = asdict(checked.settings)
    recorded["methods"] = [method_spec(m) for m in plan.sweep.methods]
    recorded["amounts"] = list(plan.sweep.amounts)
    recorded["scopes"] = list(plan.sweep.scopes)
    recorded["detail_amount"] = plan.sweep.detail_amount
    recorded["histogram_layers"] = list(plan.sweep.histogram_layers)
    recovery = plan.recovery
    recorded["modes"] = ["oneshot", *(recovery.modes if recovery else [])]
    recorded["finetune_methods"] = [method_spec(m) for m in recovery.methods] if recovery else []
    recorded["finetune_amounts"] = list(recovery.amounts) if recovery else []
    recorded["blocks"] = plan.blocks is not None
    recorded["block_amount"] = plan.blocks.amount if plan.blocks else None
    return recorded


# ---- the plan: the checked settings applied to the model ------------------------------------------


def _plan(model: nn.Module, checked: CheckedSettings, inputs: Any, training: tuple[Any, Any] | None) -> _Plan:
    if inputs is None:
        raise PruningError(
            "a study measures MACs and latency on example inputs: pass example_inputs=... (or a LoadedModel)"
        )
    config = checked.settings
    sweep = SweepPlan(
        checked.methods, checked.scopes, checked.amounts, checked.detail_amount, checked.detail_scope,
        resolve_layers(model, config.histogram_layers, lambda names: list(dict.fromkeys([names[0], names[-1]]))),
        config.latency, checked.threads, checked.latency_budget_s, config.seed,
    )  # fmt: skip
    notes: list[str] = []
    modes = _tuned_modes(checked.modes, training, notes)
    recovery = RecoveryPlan(checked.finetune_methods, checked.finetune_amounts, modes, checked.detail_scope,
                            checked.finetune_epochs, checked.lr, config.seed) if modes else None
    names = block_names(model) if config.blocks is not False else None
    if config.blocks and names is None:
        raise PruningError("blocks=True: the model has no stack of repeated blocks (a ModuleList of identical modules)")
    blocks = _block_plan(checked, recovery) if names else None
    return _Plan(sweep, recovery, blocks, names, notes)


def _tuned_modes(modes: list[str] | None, training: tuple[Any, Any] | None, notes: list[str]) -> list[str]:
    """The fine-tuning modes to run: those asked for, or by default fine-tuned and gradual where data is known."""
    if modes is None:
        if training is None:
            notes.append("No training data is known for this model: one-shot pruning only, no fine-tuning.")
            return []
        return ["finetuned", "gradual"]
    if modes and training is None:
        raise PruningError(f"modes {modes} fine-tune, and no training data is known: pass training_data=(train, test) "
                           "or keep modes=['oneshot']")
    return modes


def _block_plan(checked: CheckedSettings, recovery: RecoveryPlan | None) -> BlockPlan:
    """The seed's L2 structured pruning (or the sweep's own masked channel method), block by block."""
    structured = (m for m in checked.methods if m.granularity == "channel" and m.criterion != "random" and not m.shrink)
    method = next(structured, None) or parse_method("l2:channel")
    epochs = recovery.epochs if recovery is not None else 0
    return BlockPlan(method, checked.amounts, checked.block_amount, checked.exclude_blocks, epochs, checked.lr,
                     checked.settings.seed)
