"""The numbers of a study, and nothing else: what :func:`secateurs.analysis.study` measured, as plain data.

Everything a report shows is computed from a :class:`StudyResult`, and a result round-trips through JSON
exactly (:meth:`StudyResult.to_json`, :meth:`StudyResult.from_json`), so ``secateurs report DIR`` redraws
every figure and table from the saved numbers alone. Metric values are in the metric's own units (points
for accuracies); ``drop`` is how much worse than dense, positive = worse whichever way the metric points.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secateurs.analysis.metrics import EvaluationError
from secateurs.analysis.result import SensitivityResult

FORMAT = "secateurs.study"
FORMAT_VERSION = 1


@dataclass
class SweepRow:
    """One pruned copy: a method at an amount and scope, its metric, size, MACs and latency against dense."""

    method: str
    scope: str
    amount: float
    value: float
    params: int
    nonzero: int
    macs: int
    nonzero_macs: int
    latency_ms: float | None = None
    latency_ratio: float | None = None


@dataclass
class LayerSparsity:
    """The fraction of each layer's weights gone (zero or removed) in one copy, layers in model order."""

    method: str
    scope: str
    amount: float
    layers: list[str]
    sparsity: list[float]


@dataclass
class Histogram:
    """The nonzero weights of one layer of one model (``"dense"`` or a method) binned on the dense layer's
    range; ``zeros`` counts the weights that are exactly zero, ``removed`` those physically gone."""

    layer: str
    model: str
    edges: list[float]
    counts: list[int]
    zeros: int
    removed: int = 0


@dataclass
class RecoveryRow:
    """One pruned copy fine-tuned: ``mode`` is ``finetuned`` (one-shot, then fine-tuning), ``iterative`` or
    ``gradual`` (pruning while fine-tuning); ``value`` is the metric at the end."""

    method: str
    scope: str
    amount: float
    mode: str
    value: float
    epochs: int
    seconds: float


@dataclass
class BlockVariant:
    """The block study's pruning of some blocks (``kept`` ones stay dense), before and after fine-tuning."""

    label: str
    kept: list[str]
    value: float
    finetuned: float | None = None


@dataclass
class BlockStudy:
    """Per-block sensitivity, and pruning every block against keeping the most fragile ones dense."""

    sensitivity: SensitivityResult
    amount: float
    method: str
    fragile: list[str]
    variants: list[BlockVariant]
    epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sensitivity": self.sensitivity.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockStudy:
        return cls(**{**data, "sensitivity": SensitivityResult.from_dict(data["sensitivity"]),
                      "variants": [BlockVariant(**v) for v in data["variants"]]})


@dataclass
class StudyResult:
    """Every number of a study (see the module docstring). ``settings`` holds what was asked (the
    :class:`~secateurs.analysis.study_settings.StudySettings`, every default resolved), ``timing`` how latency
    was measured, ``stages`` the wall seconds of each part, ``notes`` what was skipped and why."""

    model: str
    metric: str
    unit: str
    higher_is_better: bool
    dense: float
    dense_params: int
    dense_macs: int
    methods: list[str]
    rows: list[SweepRow]
    layer_sparsity: list[LayerSparsity] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    sensitivity: SensitivityResult | None = None
    recovery: list[RecoveryRow] = field(default_factory=list)
    blocks: BlockStudy | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # ---- reading ----------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.unit})" if self.unit else self.metric

    @property
    def scopes(self) -> list[str]:
        return list(dict.fromkeys(row.scope for row in self.rows))

    def drop(self, value: float) -> float:
        """How much worse than dense ``value`` is (positive = worse; NaN counts as infinitely worse)."""
        if math.isnan(value):
            return math.inf
        return self.dense - value if self.higher_is_better else value - self.dense

    def curve(self, method: str, scope: str) -> list[SweepRow]:
        """The rows of one method and scope, in amount order."""
        return sorted((r for r in self.rows if r.method == method and r.scope == scope), key=lambda r: r.amount)

    def row(self, method: str, scope: str, amount: float) -> SweepRow | None:
        return next((r for r in self.curve(method, scope) if math.isclose(r.amount, amount, abs_tol=1e-9)), None)

    # ---- files ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sensitivity"] = None if self.sensitivity is None else self.sensitivity.to_dict()
        data["blocks"] = None if self.blocks is None else self.blocks.to_dict()
        return {"format": FORMAT, "version": FORMAT_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyResult:
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise EvaluationError(f"not a study result of format {FORMAT} version {FORMAT_VERSION}")
        fields = {key: value for key, value in data.items() if key not in ("format", "version")}
        fields["rows"] = [SweepRow(**row) for row in fields["rows"]]
        fields["layer_sparsity"] = [LayerSparsity(**item) for item in fields["layer_sparsity"]]
        fields["histograms"] = [Histogram(**item) for item in fields["histograms"]]
        fields["recovery"] = [RecoveryRow(**item) for item in fields["recovery"]]
        if fields["sensitivity"] is not None:
            fields["sensitivity"] = SensitivityResult.from_dict(fields["sensitivity"])
        if fields["blocks"] is not None:
            fields["blocks"] = BlockStudy.from_dict(fields["blocks"])
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> StudyResult:
        """A result from a ``study.json`` written by a study (or by ``secateurs report``)."""
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvaluationError(f"cannot read the study numbers in {file}: {exc}") from None
        try:
            return cls.from_dict(data)
        except (EvaluationError, AttributeError, KeyError, TypeError) as exc:
            raise EvaluationError(f"{file} does not hold a study's numbers ({exc}); give the study.json that "
                                  "secateurs study wrote") from None
