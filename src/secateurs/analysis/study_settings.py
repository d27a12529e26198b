"""What a study is asked to run, checked without the model: :class:`StudySettings` and :func:`check_study_settings`.

Every check that needs no model happens here, so that a command line refuses a bad request before it loads
anything; errors name the :func:`~secateurs.analysis.study` keyword at fault (``PruningError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from secateurs.analysis.sensitivity import STRUCTURAL_GRANULARITIES
from secateurs.analysis.study_recovery import MODES
from secateurs.analysis.study_sweep import DEFAULT_METHODS, parse_method
from secateurs.core.amounts import check_amount
from secateurs.core.patterns import NM, parse_pattern
from secateurs.demo.sweep import DemoMethod
from secateurs.errors import PruningError
from secateurs.recovery import FINETUNE_LR

DEFAULT_STUDY_AMOUNTS = (0.1, 0.3, 0.5, 0.7, 0.9)
SCOPES = ("local", "global")


@dataclass(frozen=True)
class StudySettings:
    """What a study runs; every field is a keyword of :func:`~secateurs.analysis.study`. ``None``: chosen from the rest.

    ``methods``: ``CRITERION[:GRANULARITY]`` specs (:func:`~secateurs.analysis.study_sweep.parse_method`).
    ``modes``: ``oneshot``, ``finetuned``, ``iterative``, ``gradual`` (default: ``oneshot``, ``finetuned`` and
    ``gradual`` where training data is known, else ``oneshot``). ``finetune_methods`` / ``finetune_amounts``:
    which copies are fine-tuned, for ``finetune_epochs`` at learning rate ``lr`` (default: the sweep's methods
    that are neither random nor shrunk, at its largest amount). ``sensitivity``: the scan's granularity
    (``None`` skips it). ``detail_amount``: where per-layer sparsity and histograms (of ``histogram_layers``,
    default the first and last pruned layers) are taken (default: the amount nearest 0.5). ``blocks``: the
    block study (default: when the model has repeated blocks) at ``block_amount`` (default: the detail
    amount), sparing the ``exclude_blocks`` most fragile. ``latency``: time every copy against dense for about
    ``latency_budget_s`` seconds each. ``threads``: intra-op threads of the whole study, timing and fine-tuning
    included. ``seed``: random criteria and data order.
    """

    methods: Sequence[str | DemoMethod] = DEFAULT_METHODS
    amounts: Sequence[float] = DEFAULT_STUDY_AMOUNTS
    scopes: Sequence[str] = SCOPES
    modes: Sequence[str] | None = None
    finetune_epochs: int = 10
    finetune_methods: Sequence[str | DemoMethod] | None = None
    finetune_amounts: Sequence[float] | None = None
    lr: float = FINETUNE_LR
    sensitivity: str | None = "unstructured"
    histogram_layers: Sequence[str] | None = None
    detail_amount: float | None = None
    blocks: bool | None = None
    block_amount: float | None = None
    exclude_blocks: int = 2
    latency: bool = True
    threads: int = 1
    latency_budget_s: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class CheckedSettings:
    """:class:`StudySettings` checked, with every default that needs no model resolved."""

    methods: list[DemoMethod]
    amounts: list[float]
    scopes: list[str]
    detail_amount: float
    modes: list[str] | None
    finetune_epochs: int
    finetune_methods: list[DemoMethod]
    finetune_amounts: list[float]
    lr: float
    sensitivity: str | None
    sensitivity_amounts: list[float] | None
    block_amount: float
    exclude_blocks: int
    threads: int
    latency_budget_s: float
    settings: StudySettings

    @property
    def detail_scope(self) -> str:
        return "local" if "local" in self.scopes else self.scopes[0]


def check_study_settings(settings: StudySettings | dict[str, Any]) -> CheckedSettings:
    """``settings`` checked without the model (see the module docstring)."""
    config = settings if isinstance(settings, StudySettings) else _settings(settings)
    methods = _methods(config.methods, "methods")
    amounts = _amounts(config.amounts, "amounts")
    detail = _detail_amount(config.detail_amount, amounts)
    tuned = _methods(config.finetune_methods, "finetune_methods") if config.finetune_methods is not None else [
        m for m in methods if m.criterion != "random" and not m.shrink] or methods[:1]
    tuned_amounts = [max(amounts)] if config.finetune_amounts is None else _amounts(
        config.finetune_amounts, "finetune_amounts")
    _check_swept(methods, amounts, tuned, tuned_amounts)
    block_amount = detail if config.block_amount is None else _amounts([config.block_amount], "block_amount")[0]
    return CheckedSettings(
        methods, amounts, _scopes(config.scopes), detail, _modes(config.modes),
        _whole(config.finetune_epochs, "finetune_epochs", 1), tuned, tuned_amounts, _positive(config.lr, "lr"),
        config.sensitivity, _sensitivity_amounts(config.sensitivity, amounts),
        block_amount, _whole(config.exclude_blocks, "exclude_blocks", 0), _whole(config.threads, "threads", 1),
        _positive(config.latency_budget_s, "latency_budget_s"), config,
    )  # fmt: skip


def _settings(settings: dict[str, Any]) -> StudySettings:
    known = {f.name for f in fields(StudySettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise PruningError(f"study() takes no {', '.join(unknown)}; its settings are {', '.join(sorted(known))}")
    return StudySettings(**settings)


def _methods(specs: Sequence[str | DemoMethod], what: str) -> list[DemoMethod]:
    if isinstance(specs, (str, DemoMethod)) or not list(specs):
        raise PruningError(f"{what} must be a non-empty list of methods such as ['l1', 'l2:channel'], got {specs!r}")
    return list(dict.fromkeys(parse_method(spec) for spec in specs))


def _amounts(values: Sequence[float], what: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise PruningError(f"{what} must be a non-empty list of fractions such as (0.1, 0.5, 0.9), got {values!r}")
    checked = [check_amount(value, f"each of {what}") for value in values]
    if any(isinstance(a, int) or not 0 < a < 1 for a in checked):
        raise PruningError(f"{what} are fractions strictly between 0 and 1 (0.5), got {list(values)}")
    return sorted({float(a) for a in checked})


def _scopes(scopes: Sequence[str]) -> list[str]:
    chosen = [scopes] if isinstance(scopes, str) else list(scopes)
    if not chosen or any(scope not in SCOPES for scope in chosen):
        raise PruningError(f"scopes must be some of {', '.join(SCOPES)}, got {scopes!r}")
    return list(dict.fromkeys(chosen))


def _detail_amount(value: float | None, amounts: list[float]) -> float:
    if value is None:
        return min(amounts, key=lambda a: (abs(a - 0.5), a))
    if not any(abs(value - a) < 1e-9 for a in amounts):
        raise PruningError(f"detail_amount={value} is not one of the amounts ({', '.join(f'{a:g}' for a in amounts)})")
    return float(value)


def _modes(modes: Sequence[str] | None) -> list[str] | None:
    if modes is None:
        return None
    chosen = [modes] if isinstance(modes, str) else list(modes)
    unknown = [mode for mode in chosen if mode not in MODES]
    if unknown or not chosen:
        raise PruningError(f"modes must be some of {', '.join(MODES)}, got {modes!r}")
    return [mode for mode in dict.fromkeys(chosen) if mode != "oneshot"]


def _check_swept(methods: list[DemoMethod], amounts: list[float], tuned: list[DemoMethod],
                 tuned_amounts: list[float]) -> None:
    """Fine-tuned copies are compared with the sweep's one-shot copies, so they must be among them."""
    missing = [m.label for m in tuned if m not in methods] + [f"{a:g}" for a in tuned_amounts if a not in amounts]
    if missing:
        raise PruningError(f"finetune_methods and finetune_amounts must be among the methods and amounts swept (their "
                           f"one-shot copies are the baseline); not swept: {', '.join(missing)}")


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise PruningError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _whole(value: int, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PruningError(f"{what} must be a whole number, {minimum} or more, got {value!r}")
    return value


def _sensitivity_amounts(granularity: str | None, amounts: list[float]) -> list[float] | None:
    """The sweep's amounts for the scan, or None where the granularity fixes its own (N:M, layer) or no scan runs."""
    if granularity is None or granularity == "layer":
        return None
    if not isinstance(granularity, str):
        raise PruningError(
            f"sensitivity must be a granularity such as 'unstructured' or 'channel', or None; got {granularity!r}")
    if granularity in STRUCTURAL_GRANULARITIES:
        return amounts
    try:
        fixed = isinstance(parse_pattern(granularity), NM)
    except PruningError as exc:
        raise PruningError(f"sensitivity={granularity!r}: {exc}") from None
    return None if fixed else amounts
