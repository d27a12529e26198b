"""What a study shows, in sentences written from its numbers: the report's answers to the seed's questions.

"Keeps" the metric means within :func:`tolerance` of dense: one point for accuracies and correlations
(units ``%`` and ``x100``), else 1% of the dense value.
"""

from __future__ import annotations

import math

from secateurs.analysis.study_result import StudyResult, SweepRow
from secateurs.recovery import recovered_fraction


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def tolerance(result: StudyResult) -> float:
    return 1.0 if result.unit in ("%", "x100") else 0.01 * abs(result.dense)


def _value(result: StudyResult, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}{'%' if result.unit == '%' else ''}" if result.unit else f"{value:.4g}"


def _drop(result: StudyResult, drop: float) -> str:
    """A mean drop in the metric's units: points to one decimal, else three significant digits."""
    text = f"{drop:.1f}" if result.unit in ("%", "x100") else f"{drop:.3g}"
    return text.removeprefix("-") if float(text) == 0 else text


def findings(result: StudyResult) -> list[str]:
    """Every finding the result supports, most general first."""
    return [*_method_findings(result), *_sensitivity_findings(result), *_cost_findings(result),
            *_recovery_findings(result), *_block_findings(result)]


def _kept_until(result: StudyResult, rows: list[SweepRow]) -> float | None:
    """The largest amount up to which every copy keeps the metric."""
    kept = None
    for row in rows:
        if result.drop(row.value) > tolerance(result):
            break
        kept = row.amount
    return kept


def _method_findings(result: StudyResult) -> list[str]:
    """Per scope, the method that keeps the metric to the largest amount (ties: the better mean)."""
    sentences = []
    for scope in result.scopes:
        sign = 1 if result.higher_is_better else -1

        def rank(method: str) -> tuple[float, float]:
            rows = result.curve(method, scope)
            kept = _kept_until(result, rows)
            return (-1.0 if kept is None else kept, sign * sum(r.value for r in rows) / len(rows))

        best = max(result.methods, key=rank)
        rows = result.curve(best, scope)
        kept = _kept_until(result, rows)
        how = (f"keeps {result.metric} up to amount {kept:g}" if kept is not None
               else "loses more than the tolerance already at the first amount")
        sentences.append(f"With {scope} scope, {best} does best: it {how}, and scores {_value(result, rows[-1].value)} "
                         f"at {rows[-1].amount:g} (dense {_value(result, result.dense)}).")
    return sentences


def _sensitivity_findings(result: StudyResult) -> list[str]:
    scan = result.sensitivity
    if scan is None or len(scan.curves) < 2:
        return []
    fragile = scan.most_sensitive(3)
    robust = scan.most_sensitive()[-1]
    drops = ", ".join(f"{name} ({_drop(result, scan.sensitivity_of(name))})" for name in fragile)
    return [f"Pruned alone ({scan.granularity}), the most fragile layers are {drops} (mean drop over the amounts); "
            f"{robust} is the most robust ({_drop(result, scan.sensitivity_of(robust))})."]


def _cost_findings(result: StudyResult) -> list[str]:
    kept = [row for row in result.rows if result.drop(row.value) <= tolerance(result)]
    if not kept:
        return ["No pruned copy keeps the metric within the tolerance."]
    leanest = min(kept, key=lambda r: r.nonzero_macs)
    share = leanest.nonzero_macs / result.dense_macs
    sentences = [f"The copy with the fewest MACs that keeps the metric is {leanest.method} ({leanest.scope}) at "
                 f"{leanest.amount:g}: {share:.0%} of the dense MACs touch a nonzero weight, scoring "
                 f"{_value(result, leanest.value)}."]
    timed = [row for row in kept if row.latency_ratio is not None]
    if timed:
        fastest = min(timed, key=lambda r: r.latency_ratio)  # type: ignore[arg-type, return-value]
        where = (f"{fastest.method} ({fastest.scope}) at {fastest.amount:g}: "
                 f"{fastest.latency_ratio:.2f}x the dense latency")
        how = f"timed interleaved with the dense model on {plural(result.timing['threads'], 'thread')}"
        sentences.append(f"The fastest such copy is {where}, {how}." if fastest.latency_ratio < 1 else
                         f"No copy that keeps the metric runs faster than dense (the fastest: {where}, {how}).")
    return sentences


def _recovery_findings(result: StudyResult) -> list[str]:
    sentences = []
    for method, amount in dict.fromkeys((r.method, r.amount) for r in result.recovery):
        row = result.row(method, result.recovery[0].scope, amount)
        if row is None:
            continue
        tuned = [r for r in result.recovery if (r.method, r.amount) == (method, amount)]
        parts = ", ".join(f"{r.mode} {_value(result, r.value)}" for r in tuned)
        best = max(tuned, key=lambda r: r.value if result.higher_is_better else -r.value)
        within = result.drop(best.value) <= tolerance(result)
        share = recovered_fraction(result.dense, row.value, best.value) if result.higher_is_better else None
        won = f", winning back {share:.0%} of the one-shot loss" if share is not None else ""
        sentences.append(
            f"{method} at {amount:g}: one-shot {_value(result, row.value)}, then {tuned[0].epochs} epochs: {parts}; "
            f"{best.mode} ends {'within' if within else 'outside'} the tolerance of dense{won}.")
    return sentences


def _block_findings(result: StudyResult) -> list[str]:
    blocks = result.blocks
    if blocks is None:
        return []
    scan = blocks.sensitivity
    ranked = ", ".join(f"{name} ({_drop(result, scan.sensitivity_of(name))})" for name in scan.most_sensitive())
    sentences = [f"Blocks from most to least fragile (mean drop when pruned alone): {ranked}."]
    every, spared = blocks.variants[0], blocks.variants[-1]
    line = (f"Pruning every block at {blocks.amount:g} scores {_value(result, every.value)}; keeping "
            f"{', '.join(spared.kept) or 'no block'} dense scores {_value(result, spared.value)}")
    if blocks.epochs and every.finetuned is not None and spared.finetuned is not None:
        line += (f"; after {blocks.epochs} epochs of fine-tuning, {_value(result, every.finetuned)} and "
                 f"{_value(result, spared.finetuned)}{_recovered(result, every.value, every.finetuned)}")
    return [*sentences, line + "."]


def _recovered(result: StudyResult, pruned: float, finetuned: float) -> str:
    share = recovered_fraction(result.dense, pruned, finetuned) if result.higher_is_better else None
    return f" (fine-tuning wins back {share:.0%} of what pruning every block lost)" if share is not None else ""
