"""The demo's reading: one paragraph, written from the numbers, saying what the experiment shows.

"Keeps accuracy" means within 1 point of the dense model; "collapses" means below half-way between
the dense accuracy and chance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the result carries its reading (DemoResult.to_dict), so the type is only named here
    from secateurs.demo.sweep import DemoResult, DemoRow

#: (ratio, accuracy) pairs of one method and scope, in ratio order.
Curve = list[tuple[float, float]]
#: (method, scope)
Key = tuple[str, str]


def reading(result: DemoResult) -> str:
    """One paragraph: which method keeps accuracy best, which unstructured one does worst, when structured
    pruning collapses and why, and what pruning did to size on disk and latency."""
    curves = _curves(result)
    if not curves:
        return "Nothing was pruned."
    dense = result.dense.accuracy
    threshold = (dense + 1.0 / result.num_classes) / 2
    mean = {key: sum(acc for _, acc in curve) / len(curve) for key, curve in curves.items()}
    best = max(mean, key=mean.__getitem__)
    parts = [_best_sentence(best, curves[best], dense)]
    parts += _worst_unstructured_sentence(curves, mean, best, threshold)
    parts += _structured_sentence(result, curves, best, threshold)
    parts += _size_and_latency_sentence(result)
    return " ".join(parts)


def _curves(result: DemoResult) -> dict[Key, Curve]:
    methods = list(dict.fromkeys(row.method for row in result.rows))
    scopes = list(dict.fromkeys(row.scope for row in result.rows))
    curves = {(method, scope): result.curve(method, scope) for method in methods for scope in scopes}
    return {key: curve for key, curve in curves.items() if curve}


def _kept_until(curve: Curve, floor: float) -> float | None:
    """The largest ratio up to which accuracy never dropped below ``floor``."""
    kept = None
    for ratio, acc in curve:
        if acc < floor:
            break
        kept = ratio
    return kept


def _collapse(curve: Curve, threshold: float) -> tuple[float, float] | None:
    """The first (ratio, accuracy) below ``threshold``, if any."""
    return next(((ratio, acc) for ratio, acc in curve if acc < threshold), None)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _is_structured(method: str) -> bool:
    return "structured" in method and "unstructured" not in method


def _best_sentence(best: Key, curve: Curve, dense: float) -> str:
    kept = _kept_until(curve, dense - 0.01)
    last_ratio, last_acc = curve[-1]
    how = (
        f"it stays within 1 point of the dense {dense:.1%} up to ratio {kept:g}"
        if kept is not None
        else "it has the highest accuracy on average, though it loses more than a point already at ratio "
        f"{curve[0][0]:g}"
    )
    return (
        f"{_capitalized(best[0])} pruning ({best[1]}) keeps accuracy best: {how} "
        f"and has {last_acc:.1%} at {last_ratio:g}."
    )


def _worst_unstructured_sentence(
    curves: dict[Key, Curve], mean: dict[Key, float], best: Key, threshold: float
) -> list[str]:
    others = [key for key in curves if not _is_structured(key[0]) and key[0] != best[0]]
    if not others:
        return []
    worst = min(others, key=mean.__getitem__)
    hit = _collapse(curves[worst], threshold)
    last_ratio, last_acc = curves[worst][-1]
    fate = (
        f"collapses to {hit[1]:.1%} at ratio {hit[0]:g}" if hit else f"ends at {last_acc:.1%} at ratio {last_ratio:g}"
    )
    return [f"{_capitalized(worst[0])} ({worst[1]}) does worst of the unstructured methods: it {fate}."]


def _structured_sentence(result: DemoResult, curves: dict[Key, Curve], best: Key, threshold: float) -> list[str]:
    structured = {key: _collapse(curve, threshold) for key, curve in curves.items() if _is_structured(key[0])}
    hits = {key: hit for key, hit in structured.items() if hit}
    if hits:
        return [_structured_collapse(result, hits, best, _collapse(curves[best], threshold), threshold)]
    if structured:
        return [f"Structured pruning never falls below {threshold:.0%} (half-way to chance) at these ratios."]
    return []


def _structured_collapse(
    result: DemoResult,
    hits: dict[Key, tuple[float, float]],
    best: Key,
    best_collapse: tuple[float, float] | None,
    threshold: float,
) -> str:
    earliest = min(hit[0] for hit in hits.values())
    compared = (
        f", against {best_collapse[0]:g} for {best[0]} ({best[1]})"
        if best_collapse
        else f", while {best[0]} ({best[1]}) never does"
    )
    verb = "collapses earlier" if not best_collapse or earliest < best_collapse[0] else "collapses too"
    by_method: dict[str, list[str]] = {}
    for (method, scope), hit in hits.items():
        by_method.setdefault(method, []).append(f"{hit[0]:g} ({scope})")
    listed = ", ".join(f"{' and '.join(at)} for {method}" for method, at in by_method.items())
    return (
        f"Structured pruning {verb}: accuracy falls below {threshold:.0%} (half-way to chance) at ratio {listed}"
        f"{compared}. {_why_structured_collapses(result, hits)}."
    )


def _why_structured_collapses(result: DemoResult, hits: dict[Key, tuple[float, float]]) -> str:
    """Whole feature maps go; and where global ranking emptied most of one layer at the collapse, it says so."""
    at_collapse = [
        row
        for row in result.rows
        if _is_structured(row.method)
        and row.scope == "global"
        and (row.method, row.scope) in hits
        and row.ratio == hits[(row.method, row.scope)][0]
    ]
    emptied: DemoRow | None = max(at_collapse, key=lambda row: row.most_pruned_fraction, default=None)
    why = "Each removed channel takes a whole feature map with it"
    if emptied is not None and emptied.most_pruned_fraction >= 0.75:
        why += (
            f"; the global ranking also thins layers unevenly ({emptied.method} at {emptied.ratio:g} removes "
            f"{emptied.most_pruned_fraction:.0%} of the channels of "
            f"{emptied.most_pruned_layer.removesuffix('.weight')})"
        )
    return why


def _size_and_latency_sentence(result: DemoResult) -> list[str]:
    mid = min(result.config.ratios, key=lambda r: abs(r - 0.5))
    unstructured_mid = [row.evaluation for row in result.rows if row.ratio == mid and not _is_structured(row.method)]
    if not unstructured_mid:
        return []
    size = (
        f"Size on disk follows the nonzeros in the sparse format ({result.dense.sparse_kb:.1f} KB dense, "
        f"{unstructured_mid[0].sparse_kb:.1f} KB at ratio {mid:g} unstructured)"
    )
    # Only fewer parameters (channels physically removed) can make a model faster; comparing timings
    # alone would read noise as a speed-up. Ratios come from the same interleaved rounds as the dense time.
    shrunk = sorted(
        row.evaluation.latency_ratio
        for row in result.rows
        if row.ratio >= mid and row.evaluation.params < result.dense.params
    )
    if shrunk:
        median = shrunk[len(shrunk) // 2]
        return [
            (
                f"{size}; models with channels physically removed, from ratio {mid:g}, take a median {median:.2f}x "
                f"the dense model's {result.dense.latency_ms:.3f} ms per batch, timed in the same rounds."
            )
        ]
    ratios = sorted(row.evaluation.latency_ratio for row in result.rows)
    low, high = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    return [
        (
            f"{size}, but latency does not change beyond timing noise: the middle half of the pruned models take "
            f"{low:.2f}x to {high:.2f}x the dense model's {result.dense.latency_ms:.3f} ms per batch, because masked "
            "zeros are still multiplied; only physically removing channels makes the model faster."
        )
    ]
