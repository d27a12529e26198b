"""Deciding where to cut: one interface for evaluation, and sensitivity analysis on top of it.

* :mod:`.metrics` - :class:`Metric` (a model's score, and which way is better), user functions, the model
  source's own task metric, and :class:`OutputMetric` (metrics on fixed inputs, whose activations a scan reuses);
* :mod:`.tasks` - perplexity on a text file, Spearman on an STS file, top-1 on an ImageFolder;
* :mod:`.proxy` - the cheap proxy for sweeps: loss, or output distance to the dense model;
* :mod:`.specs` - ``--eval`` specs: :func:`check_metric_spec` (no model needed) and :func:`parse_metric`;
* :mod:`.units` - what a scan perturbs, and how each granularity undoes it exactly;
* :mod:`.reuse` - evaluations that skip the blocks before the perturbed one;
* :mod:`.sensitivity` - :func:`sensitivity`, the scan;
* :mod:`.result`, :mod:`.plots` - :class:`SensitivityResult`: curves, ranking, JSON/CSV, plots.
* :mod:`.study` - :func:`study`: methods x amounts x scopes (x fine-tuning), sensitivity and blocks, as a report
  (:mod:`.study_settings`, :mod:`.study_sweep`, :mod:`.study_recovery`, :mod:`.blocks`: its parts;
  :class:`StudyResult`, the numbers; :mod:`.figures`, :mod:`.findings`, :mod:`.report`: what is written).
* :mod:`.allocation` - :func:`allocate`: per-layer amounts that reach a :class:`Target` (:mod:`.targets`) losing
  the least (:mod:`.unit_space`, :mod:`.costs`, :mod:`.greedy`: its parts; :mod:`.latency_table`: latencies
  measured here, cached).

See docs/analysis.md.
"""

from secateurs.analysis.allocation import SOURCES, Allocation, allocate
from secateurs.analysis.latency_table import LatencyTable, latency_table
from secateurs.analysis.metrics import (
    EvaluationError,
    FunctionMetric,
    Metric,
    OutputMetric,
    TaskMetric,
    task_score,
    with_unit,
    as_metric,
)
from secateurs.analysis.proxy import (
    LabelLoss,
    NextTokenLoss,
    OutputDistance,
    proxy_metric,
)
from secateurs.analysis.report import (
    ReportFiles,
    check_report_dir,
    rebuild_report,
    write_report,
)
from secateurs.analysis.result import SensitivityResult, UnitCurve, exact_pattern
from secateurs.analysis.sensitivity import (
    DEFAULT_AMOUNTS,
    STRUCTURAL_GRANULARITIES,
    sensitivity,
)
from secateurs.analysis.specs import (
    METRIC_USAGE,
    MetricSpec,
    check_metric_spec,
    check_samples,
    parse_metric,
    resolve_calibration,
)
from secateurs.analysis.study import study
from secateurs.analysis.study_recovery import MODES
from secateurs.analysis.study_result import StudyResult
from secateurs.analysis.study_settings import (
    DEFAULT_STUDY_AMOUNTS,
    StudySettings,
    check_study_settings,
)
from secateurs.analysis.study_sweep import DEFAULT_METHODS, parse_method
from secateurs.analysis.targets import (
    TARGET_KINDS,
    Target,
    UnreachableTargetError,
    parse_target,
)
from secateurs.analysis.tasks import (
    ImageFolderTop1,
    Perplexity,
    STSCorrelation,
    imagefolder_metric,
    perplexity_metric,
    sts_metric,
)
from secateurs.analysis.units import Unit

__all__ = [
    "DEFAULT_AMOUNTS",
    "DEFAULT_METHODS",
    "DEFAULT_STUDY_AMOUNTS",
    "METRIC_USAGE",
    "MODES",
    "SOURCES",
    "STRUCTURAL_GRANULARITIES",
    "TARGET_KINDS",
    "Allocation",
    "EvaluationError",
    "FunctionMetric",
    "ImageFolderTop1",
    "LabelLoss",
    "LatencyTable",
    "Metric",
    "MetricSpec",
    "NextTokenLoss",
    "OutputDistance",
    "OutputMetric",
    "Perplexity",
    "ReportFiles",
    "STSCorrelation",
    "SensitivityResult",
    "StudyResult",
    "StudySettings",
    "Target",
    "TaskMetric",
    "task_score",
    "with_unit",
    "Unit",
    "UnitCurve",
    "UnreachableTargetError",
    "allocate",
    "as_metric",
    "check_metric_spec",
    "check_samples",
    "check_report_dir",
    "check_study_settings",
    "exact_pattern",
    "imagefolder_metric",
    "latency_table",
    "parse_method",
    "parse_metric",
    "parse_target",
    "perplexity_metric",
    "proxy_metric",
    "rebuild_report",
    "resolve_calibration",
    "sensitivity",
    "sts_metric",
    "study",
    "write_report",
]
