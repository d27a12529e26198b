"""Which parameters to prune: by module type and by name, with defaults that protect what usually matters.

Defaults: the ``weight`` of Linear and Conv layers (and Hugging Face ``Conv1D``). Normalisation layers,
embeddings, the output layer (the last Linear/Conv of the model) and frozen parameters are skipped and
reported. A wildcard pattern respects those defaults; naming a parameter exactly selects it anyway
(frozen ones excepted, see ``include_frozen``). Tied parameters held by several modules become one target.

Patterns are shell globs (``layer4.*``, ``*.attention.*``) matched against module names and qualified
parameter names, or regular expressions when prefixed with ``re:``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from secateurs.core.targets import EMBEDDING_TYPES, Target, is_linear_like, is_norm_like
from secateurs.errors import SelectionError

ModuleType = type[nn.Module] | str


@dataclass(frozen=True)
class Skipped:
    """A parameter left alone, and why."""

    name: str
    reason: str


@dataclass
class Selection:
    targets: list[Target]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]


def _is_glob(pattern: str) -> bool:
    return pattern.startswith("re:") or any(ch in pattern for ch in "*?[")


def name_matcher(pattern: str) -> Callable[[str], bool]:
    """A test for names: a shell glob (``layer4.*``), or a regular expression (full match) after ``re:``.
    The one pattern syntax of ``include``, ``exclude`` and ``per_layer`` everywhere."""
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as exc:
            raise SelectionError(f"bad regular expression {pattern!r}: {exc}") from None
        return lambda name: regex.fullmatch(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _type_matches(module: nn.Module, types: Sequence[ModuleType]) -> bool:
    for kind in types:
        if isinstance(kind, str):
            if type(module).__name__ == kind or any(cls.__name__ == kind for cls in type(module).__mro__):
                return True
        elif isinstance(module, kind):
            return True
    return False


def _default_skip_reason(module: nn.Module) -> str | None:
    if is_norm_like(module):
        return "normalization layer"
    if isinstance(module, EMBEDDING_TYPES):
        return "embedding"
    if not is_linear_like(module):
        return f"{type(module).__name__} is not a Linear/Conv layer (pass types=... to include it)"
    return None


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def find_output_layer(model: nn.Module) -> str | None:
    """Name of the last Linear/Conv module in definition order: the classifier or LM head in common models."""
    last = None
    for name, module in model.named_modules():
        if is_linear_like(module):
            last = name
    return last


Holders = list[tuple[str, nn.Module, str]]


def _holders_by_tensor(model: nn.Module, param_names: Sequence[str]) -> list[Holders]:
    """(module name, module, parameter name) of every holder, one list per parameter tensor: tied
    parameters collect their other holders after the first."""
    entries: dict[int, Holders] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for pname, param in module._parameters.items():
            if param is None or pname not in param_names:
                continue
            holders = entries.setdefault(id(param), [])
            if all(m is not module or p != pname for _, m, p in holders):
                holders.append((module_name, module, pname))
    return list(entries.values())


def _why_skipped(
    holders: Holders,
    qualified: str,
    exact: bool,
    types: Sequence[ModuleType] | None,
    output_layer: str | None,
    include_frozen: bool,
) -> str | None:
    """Why a parameter the patterns let through stays unpruned (None: prune it). Naming a parameter exactly
    overrides the type and output-layer defaults, not the protection of frozen parameters."""
    _, module, pname = holders[0]
    reason = None
    if not exact:
        if types is not None:
            reason = None if _type_matches(module, types) else f"{type(module).__name__} not in types"
        else:
            reason = _default_skip_reason(module)
        if reason is None and any(m == output_layer for m, _, _ in holders):
            reason = "output layer (pass include_output=True or name it to prune it)"
    if reason is None and not module._parameters[pname].requires_grad and not include_frozen:
        if exact:
            raise SelectionError(f"{qualified} is frozen (requires_grad=False); unfreeze it or pass include_frozen=True")
        reason = "frozen (requires_grad=False; pass include_frozen=True to prune it)"
    return reason


def select(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    types: Sequence[ModuleType] | None = None,
    param_names: Sequence[str] = ("weight",),
    include_output: bool = False,
    include_frozen: bool = False,
) -> Selection:
    """Pick the parameters to prune. Raises :class:`SelectionError` when nothing is selected or a pattern
    matches nothing, naming the closest parameter names."""
    include_fns = [(p, name_matcher(p)) for p in _as_list(include)]
    exclude_fns = [(p, name_matcher(p)) for p in _as_list(exclude)]
    output_layer = None if include_output else find_output_layer(model)
    all_names: list[str] = []
    matched: set[str] = set()
    targets: list[Target] = []
    skipped: list[Skipped] = []
    for holders in _holders_by_tensor(model, param_names):
        module_name, module, pname = holders[0]
        qualified = f"{module_name}.{pname}" if module_name else pname
        names = {qualified, module_name} | {f"{m}.{p}" if m else p for m, _, p in holders} | {m for m, _, _ in holders}
        all_names.append(qualified)
        hits = [p for p, fn in include_fns if any(fn(n) for n in names)]
        excluded = [p for p, fn in exclude_fns if any(fn(n) for n in names)]
        matched.update(hits, excluded)
        if include_fns and not hits:
            continue
        if excluded:
            skipped.append(Skipped(qualified, f"excluded by {excluded[0]!r}"))
            continue
        exact = any(not _is_glob(p) for p in hits)
        reason = _why_skipped(holders, qualified, exact, types, output_layer, include_frozen)
        if reason is not None:
            skipped.append(Skipped(qualified, reason))
            continue
        targets.append(Target(module_name, pname, module, tuple((m, mod) for m, mod, _ in holders[1:])))
    for kind, fns in (("include", include_fns), ("exclude", exclude_fns)):
        for pattern, _ in fns:
            if pattern not in matched:
                raise SelectionError(_no_match_message(kind, pattern, all_names))
    if not targets:
        why = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:6]) or "the model has no such parameters"
        raise SelectionError(
            f"nothing to prune: no parameter named {'/'.join(param_names)} passed the selection ({why}). "
            "Widen include/types, or pass include_output/include_frozen."
        )
    return Selection(targets, skipped)


def _no_match_message(kind: str, pattern: str, names: list[str]) -> str:
    close = difflib.get_close_matches(pattern.removeprefix("re:"), names, n=3, cutoff=0.4)
    hint = f"; close names: {', '.join(close)}" if close else f"; parameters look like: {', '.join(names[:4])}"
    return f"{kind} pattern {pattern!r} matches no parameter{hint}"
