"""``torch.nn.utils.prune``, on secateurs' masks: change one import, keep the code and the masks.

    import secateurs.compat.prune as prune      # was: import torch.nn.utils.prune as prune

Every function and pruning-method class of ``torch.nn.utils.prune`` is here with the same
arguments and return values, and yields the same masks for the same inputs (random methods draw
different masks). Repeated pruning follows torch: an amount is a fraction (or count) of what is
still unpruned, and structured pruning only considers channels that are not already all pruned.

What differs, on purpose (see ``docs/compat.md``):

* the weight stays a parameter holding real zeros; no ``weight_orig`` copy, so state_dict keys do
  not change and ``copy.deepcopy``/pickle work;
* ``module.weight_mask`` is a bool buffer (True = kept), not a float copy, and not saved in the
  state_dict (``secateurs.mask_state_dict`` saves masks, bit-packed);
* ``global_unstructured`` ranks all weights without concatenating them (extra memory about one
  tensor, not 12x the model), through the engine's global scope;
* pruned weights are never revived, a failed call leaves the module as it was, and bad input is
  refused with the exception type torch raises (``TypeError``, ``ValueError``, ``IndexError``,
  ``AttributeError``) and a message that says what to do; where torch raises ``AssertionError``
  (shape mismatches) this raises ``ValueError``;
* a module holding no parameters of its own (a container, an activation) is skipped with a
  warning, so loops over ``model.named_modules()`` run; torch raises ``AttributeError`` there.

Pruning-method classes you write yourself keep working: a subclass of :class:`BasePruningMethod`
(or of torch's) that defines ``compute_mask`` is called exactly as torch calls it, on the
unpruned part of the tensor chosen by its ``PRUNING_TYPE``, with a float ``default_mask``. That
fallback runs your code as written, so for ``global_unstructured`` it concatenates like torch does.
"""

from __future__ import annotations

import numbers
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as _torch_prune

from secateurs.core.amounts import Amount, check_amount
from secateurs.core.criteria import Criterion, LnNorm, Magnitude, Random, score_dtype
from secateurs.core.engine import apply_plan, plan_masks, validate_target
from secateurs.core.masks import get_mask, is_pruned, remove_mask
from secateurs.core.patterns import Pattern, Structured, Unstructured
from secateurs.core.targets import Target
from secateurs.errors import PruningError, SecateursError

__all__ = [
    "BasePruningMethod",
    "CustomFromMask",
    "Identity",
    "L1Unstructured",
    "LnStructured",
    "PruningAttributeError",
    "PruningIndexError",
    "PruningTypeError",
    "RandomStructured",
    "RandomUnstructured",
    "custom_from_mask",
    "global_unstructured",
    "identity",
    "is_pruned",
    "l1_unstructured",
    "ln_structured",
    "random_structured",
    "random_unstructured",
    "remove",
]

Plan = dict[str, tuple[Target, torch.Tensor]]


class PruningTypeError(SecateursError, TypeError):
    """An argument of the wrong kind, where torch.nn.utils.prune raises ``TypeError``."""


class PruningIndexError(SecateursError, IndexError):
    """A dimension out of range, where torch.nn.utils.prune raises ``IndexError``."""


class PruningAttributeError(SecateursError, AttributeError):
    """A parameter that is not there, where torch.nn.utils.prune raises ``AttributeError``."""


# --- argument checks ---------------------------------------------------------------------------


def _checked_amount(amount: object) -> Amount:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise PruningTypeError(
            f"amount must be a float fraction in [0, 1] or an int count, got {amount!r} ({type(amount).__name__})"
        )
    return check_amount(amount)


def _checked_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise PruningTypeError(f"dim must be an int (a dimension index of the tensor), got {dim!r}")
    return int(dim)


def _check_structured(shape: torch.Size, dim: int, what: str) -> None:
    if len(shape) < 2:
        raise PruningError(
            f"structured pruning removes whole slices, so it needs a tensor of 2+ dims; {what} has shape "
            f"{tuple(shape)}. Prune it with an unstructured method instead"
        )
    if not -len(shape) <= dim < len(shape):
        raise PruningIndexError(
            f"dim={dim} is out of range for {what} of shape {tuple(shape)}; pick one in [{-len(shape)}, {len(shape) - 1}]"
        )


def _check_scores(scores: object, param: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise PruningTypeError(f"importance_scores for {what} must be a tensor, got {type(scores).__name__}")
    if scores.shape != param.shape:
        raise PruningError(
            f"importance_scores for {what} have shape {tuple(scores.shape)}, the parameter {tuple(param.shape)}; "
            "give one score per weight"
        )
    return scores


def _keep_from(mask: object, shape: torch.Size, device: torch.device, what: str) -> torch.Tensor:
    """A 0/1 (or bool) mask as a bool keep-mask; other values would silently scale weights in torch."""
    if not isinstance(mask, torch.Tensor):
        raise PruningTypeError(f"mask for {what} must be a tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise PruningError(f"mask for {what} has shape {tuple(mask.shape)}, the parameter {tuple(shape)}; give one entry per weight")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise PruningError(
                f"mask for {what} holds values other than 0 and 1; a mask only says keep (1) or prune (0). "
                "To scale weights, multiply them instead"
            )
        mask = mask != 0
    return mask.to(device)


def _parameter(module: object, name: object) -> nn.Parameter | None:
    """``module.<name>`` as a parameter; None when the module holds no parameters at all."""
    if not isinstance(module, nn.Module):
        raise PruningTypeError(f"expected an nn.Module holding the parameter, got {type(module).__name__}")
    if not isinstance(name, str):
        raise PruningTypeError(f"name must be the parameter's name as a str, got {name!r}")
    params = module._parameters
    if params.get(name) is not None:
        return params[name]
    kind = type(module).__name__
    if name + "_orig" in params:
        raise PruningError(
            f"{kind}.{name} is pruned by torch.nn.utils.prune ({name}_orig exists); call "
            f"torch.nn.utils.prune.remove(module, {name!r}) first, then prune it here"
        )
    if name in params:
        raise PruningTypeError(f"{kind}.{name} is None (for example a layer built with bias=False); there is nothing to prune")
    if all(p is None for p in params.values()):
        return None
    if hasattr(module, name):
        raise PruningTypeError(
            f"{kind}.{name} is a {type(getattr(module, name)).__name__}, not a parameter; only parameters can be pruned"
        )
    have = ", ".join(n for n, p in params.items() if p is not None)
    raise PruningAttributeError(f"{kind} has no parameter {name!r}; its parameters are: {have}")


def _skip(module: nn.Module, name: str, action: str) -> None:
    """Warn, from the user's line, that a parameterless module was left alone."""
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"{type(module).__name__} holds no parameters of its own, so there is no {name!r} to {action}; "
        "left as it is (torch.nn.utils.prune raises AttributeError here)",
        stacklevel=level,
    )


# --- criteria with torch's exact semantics ----------------------------------------------------


class _TorchNorm(LnNorm):
    """Group norms as ``ln_structured`` computes them: any order ``torch.norm`` accepts (negative,
    0, -inf, ``"fro"``, ``"nuc"``), on the signed values, so the norms match torch's bit for bit."""

    pointwise = False

    def __init__(self, n: float | int | str) -> None:
        numeric = isinstance(n, numbers.Real) and not isinstance(n, bool)
        if not (numeric or n in ("fro", "nuc")):
            raise PruningTypeError(f"n must be a number, inf, -inf, 'fro' or 'nuc' (as for torch.norm), got {n!r}")
        if numeric and n != n:
            raise PruningError("n is NaN; give the order of the norm (1, 2, inf, ...)")
        self.n = n

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        return param.detach().to(score_dtype(param))

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if not dims:
            return scores.abs()
        if self.n == "nuc" or (self.n == "fro" and len(dims) == 2):
            if len(dims) != 2:
                raise PruningError(
                    f"n='nuc' is a matrix norm: it needs channels of exactly 2 more dims (Conv1d weights), "
                    f"these have {len(dims)}; use n=2 or n='fro'"
                )
            return torch.linalg.matrix_norm(scores, ord=self.n, dim=dims)
        return torch.linalg.vector_norm(scores, ord=2 if self.n == "fro" else self.n, dim=dims)

    def __repr__(self) -> str:
        return f"TorchNorm(n={self.n!r})"


class _ScoredBy(Criterion):
    """Apply ``base`` to given importance tensors instead of the weights (torch's ``importance_scores``)."""

    def __init__(self, base: Criterion, scores: Mapping[str, torch.Tensor]) -> None:
        self.base = base
        self.scores = scores
        self.name = base.name

    def score(self, param: torch.Tensor, target: Target) -> torch.Tensor:
        given = self.scores.get(target.name)
        return self.base.score(param if given is None else given.detach().to(param.device), target)

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return self.base.reduce(scores, dims)

    def __repr__(self) -> str:
        return f"{self.base!r} of importance_scores"


# --- pruning methods ---------------------------------------------------------------------------


class BasePruningMethod(ABC):
    """Base of every pruning method; subclass it and define ``compute_mask`` for a method of your own.

    ``PRUNING_TYPE`` says what ``compute_mask`` sees when a tensor is pruned again: ``"unstructured"``
    the flat unpruned entries, ``"structured"`` the channels along ``self.dim`` not yet all pruned,
    ``"global"`` the whole tensor.
    """

    PRUNING_TYPE: str = "unstructured"
    _tensor_name: str | None = None

    @abstractmethod
    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Mask for ``t`` (1 keep, 0 prune), combined with ``default_mask``, the mask so far."""

    @classmethod
    def apply(cls, module: nn.Module, name: str, *args: Any, importance_scores: torch.Tensor | None = None, **kwargs: Any):
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)``; returns the method."""
        method = cls(*args, **kwargs)
        method._tensor_name = name
        _prune_parameter(module, name, method, importance_scores)
        return method

    def prune(self, t: torch.Tensor, default_mask: torch.Tensor | None = None, importance_scores: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` with this method's mask applied (nothing is registered anywhere)."""
        scores = t if importance_scores is None else _check_scores(importance_scores, t, "t")
        default = torch.ones_like(t) if default_mask is None else default_mask
        return t * self.compute_mask(scores, default_mask=default)


class _EngineMethod(BasePruningMethod):
    """A built-in method, carried out by the engine as a criterion, a pattern and an amount."""

    amount: Amount = 0

    def criterion(self) -> Criterion:
        return Magnitude()

    def pattern(self) -> Pattern:
        return Unstructured()

    def check(self, target: Target) -> None:
        """Refuse a parameter this method cannot prune, with torch's exception types."""

    def plan(self, targets: list[Target], scores: Mapping[str, torch.Tensor], scope: str) -> Plan:
        """New keep-masks, in torch's relative sense: the amount is taken from what is still unpruned."""
        for target in targets:
            self.check(target)
        criterion = _ScoredBy(self.criterion(), scores) if scores else self.criterion()
        return plan_masks(targets, criterion, self.pattern(), self.amount, scope=scope, mode="relative")  # type: ignore[arg-type]

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """torch's contract: rank all of ``t`` (``default_mask`` only multiplies the result)."""
        holder = nn.Module()
        holder.tensor = t.detach()
        target = Target("", "tensor", holder)
        (_, keep), = self.plan([target], {}, "local").values()
        return default_mask * keep


class Identity(_EngineMethod):
    """Registers a mask that prunes nothing."""

    PRUNING_TYPE = "unstructured"

    @classmethod
    def apply(cls, module: nn.Module, name: str):  # type: ignore[override]
        return super().apply(module, name)


class RandomUnstructured(_EngineMethod):
    """Prunes ``amount`` of the unpruned weights at random (reproducible under ``torch.manual_seed``)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: Amount) -> None:
        self.amount = _checked_amount(amount)

    def criterion(self) -> Criterion:
        return Random()

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount):  # type: ignore[override]
        return super().apply(module, name, amount=amount)


class L1Unstructured(_EngineMethod):
    """Prunes the ``amount`` of unpruned weights with the smallest absolute value (or importance score)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: Amount) -> None:
        self.amount = _checked_amount(amount)

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount, importance_scores: torch.Tensor | None = None):  # type: ignore[override]
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


class _StructuredMethod(_EngineMethod):
    PRUNING_TYPE = "structured"
    dim: int = -1

    def pattern(self) -> Pattern:
        return Structured(self.dim)

    def check(self, target: Target) -> None:
        _check_structured(target.param.shape, self.dim, target.name)


class RandomStructured(_StructuredMethod):
    """Prunes ``amount`` of the remaining channels along ``dim``, at random."""

    def __init__(self, amount: Amount, dim: int = -1) -> None:
        self.amount = _checked_amount(amount)
        self.dim = _checked_dim(dim)

    def criterion(self) -> Criterion:
        return Random()

    @classmethod
    def apply(cls, module: nn.Module, name: str, amount: Amount, dim: int = -1):  # type: ignore[override]
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(_StructuredMethod):
    """Prunes ``amount`` of the remaining channels along ``dim`` with the smallest L``n`` norm."""

    def __init__(self, amount: Amount, n: float | int | str, dim: int = -1) -> None:
        self.amount = _checked_amount(amount)
        self.n = _TorchNorm(n).n
        self.dim = _checked_dim(dim)

    def criterion(self) -> Criterion:
        return _TorchNorm(self.n)

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: nn.Module, name: str, amount: Amount, n: float | int | str, dim: int = -1,
        importance_scores: torch.Tensor | None = None,
    ):
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Prunes where ``mask`` is 0 (or False), on top of any earlier pruning."""

    PRUNING_TYPE = "global"

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = _keep_from(self.mask, default_mask.shape, default_mask.device, "the tensor")
        return default_mask * keep

    @classmethod
    def apply(cls, module: nn.Module, name: str, mask: torch.Tensor):  # type: ignore[override]
        return super().apply(module, name, mask=mask)


_TORCH_TWINS: dict[type, type[BasePruningMethod]] = {
    _torch_prune.Identity: Identity,
    _torch_prune.RandomUnstructured: RandomUnstructured,
    _torch_prune.L1Unstructured: L1Unstructured,
    _torch_prune.RandomStructured: RandomStructured,
    _torch_prune.LnStructured: LnStructured,
    _torch_prune.CustomFromMask: CustomFromMask,
}


def _on_engine(method: object) -> bool:
    """Built-in methods run on the engine; a subclass with its own ``compute_mask`` runs that instead."""
    return isinstance(method, _EngineMethod) and type(method).compute_mask is _EngineMethod.compute_mask


def _is_plain_custom_mask(method: object) -> bool:
    return isinstance(method, CustomFromMask) and type(method).compute_mask is CustomFromMask.compute_mask


# --- the fallback: a user's compute_mask, called the way torch calls it --------------------------


def _combine(method: Any, scores: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Run ``method.compute_mask`` on the still-unpruned part of ``scores`` (per its PRUNING_TYPE)
    and write the result into a copy of the float mask ``old``."""
    kind = getattr(method, "PRUNING_TYPE", None)
    if kind == "unstructured":
        part: Any = old == 1
    elif kind == "structured":
        if not hasattr(method, "dim"):
            raise PruningAttributeError(f"{type(method).__name__} has PRUNING_TYPE 'structured' but no `dim` attribute; set self.dim")
        dim = _checked_dim(method.dim)
        _check_structured(scores.shape, dim, "the tensor")
        dim %= scores.dim()
        alive = old.sum(dim=[d for d in range(old.dim()) if d != dim]) != 0
        part = tuple(alive if d == dim else slice(None) for d in range(old.dim()))
    elif kind == "global":
        part = (slice(None),) * old.dim()
    else:
        raise PruningError(f"{type(method).__name__} has PRUNING_TYPE {kind!r}; use 'unstructured', 'structured' or 'global'")
    new = old.clone()
    new[part] = method.compute_mask(scores[part], default_mask=old[part]).to(new.dtype)
    return new


def _keep_by_compute_mask(method: Any, target: Target, scores: torch.Tensor | None) -> torch.Tensor:
    param = target.param.detach()
    scores = param if scores is None else scores
    current = get_mask(target.module, target.param_name)
    if current is None:
        mask = method.compute_mask(scores, default_mask=torch.ones_like(param))
    else:
        mask = _combine(method, scores, current.to(param.dtype))
    keep = _keep_from(mask, param.shape, param.device, target.name)
    return keep if current is None else keep & current


# --- carrying a method out -----------------------------------------------------------------------


def _prune_parameter(module: nn.Module, name: str, method: BasePruningMethod, importance_scores: torch.Tensor | None) -> None:
    param = _parameter(module, name)
    if param is None:
        _skip(module, name, "prune")
        return
    target = Target(type(module).__name__, name, module)
    scores = {} if importance_scores is None else {target.name: _check_scores(importance_scores, param, target.name)}
    validate_target(target)
    if _on_engine(method):
        plan = method.plan([target], scores, "local")  # type: ignore[attr-defined]
    elif _is_plain_custom_mask(method):
        keep = _keep_from(method.mask, param.shape, param.device, target.name)  # type: ignore[attr-defined]
        current = get_mask(module, name)
        plan = {target.name: (target, keep if current is None else keep & current)}
    else:
        plan = {target.name: (target, _keep_by_compute_mask(method, target, importance_scores))}
    apply_plan(plan)


def _global_targets(pairs: list[Any], importance_scores: dict) -> tuple[list[Target], dict[str, torch.Tensor]]:
    """One target per distinct tensor (a tensor listed twice, or tied between modules, is ranked once)."""
    targets: list[Target] = []
    where: dict[int, int] = {}
    scores: dict[str, torch.Tensor] = {}
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise PruningTypeError(f"parameters[{index}] must be a (module, name) pair, got {pair!r}")
        module, name = pair
        param = _parameter(module, name)
        if param is None:
            raise PruningAttributeError(f"parameters[{index}]: {type(module).__name__} holds no parameter {name!r}")
        if id(param) in where:
            first = targets[where[id(param)]]
            if name != first.param_name:
                raise PruningError(
                    f"parameters[{index}] is the tensor of {first.name} under another name ({name!r}); list it once"
                )
            if all(holder is not module for _, holder in first.holders):
                alias = (f"{type(module).__name__}#{index}", module)
                targets[where[id(param)]] = Target(first.module_name, first.param_name, first.module, (*first.aliases, alias))
            continue
        target = Target(f"{type(module).__name__}#{index}", name, module)
        validate_target(target)
        given = importance_scores.get((module, name))
        if given is not None:
            scores[target.name] = _check_scores(given, param, target.name)
        where[id(param)] = len(targets)
        targets.append(target)
    return targets, scores


def _global_by_compute_mask(method: Any, targets: list[Target], scores: Mapping[str, torch.Tensor]) -> Plan:
    """torch's algorithm for a user's method: it expects one flat vector, so concatenate."""
    flat = torch.cat([scores.get(t.name, t.param.detach()).reshape(-1) for t in targets])
    masks = [get_mask(t.module, t.param_name) for t in targets]
    old = torch.cat(
        [(torch.ones(t.param.numel(), dtype=flat.dtype) if m is None else m.reshape(-1).to(flat.dtype)) for t, m in zip(targets, masks)]
    )
    keep = _keep_from(_combine(method, flat, old), flat.shape, flat.device, "the parameters")
    plan, start = {}, 0
    for target, current in zip(targets, masks):
        param = target.param
        part = keep[start : start + param.numel()].view(param.shape).to(param.device)
        plan[target.name] = (target, part if current is None else part & current)
        start += param.numel()
    return plan


# --- the functions of torch.nn.utils.prune -------------------------------------------------------


def identity(module: nn.Module, name: str) -> nn.Module:
    """Register a mask on ``module.<name>`` that prunes nothing; returns ``module``."""
    Identity.apply(module, name)
    return module


def random_unstructured(module: nn.Module, name: str, amount: Amount) -> nn.Module:
    """Prune ``amount`` (fraction or count) of the unpruned weights of ``module.<name>`` at random."""
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module: nn.Module, name: str, amount: Amount, importance_scores: torch.Tensor | None = None) -> nn.Module:
    """Prune ``amount`` of the unpruned weights with the smallest ``|w|`` (or ``|importance_scores|``)."""
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module: nn.Module, name: str, amount: Amount, dim: int = -1) -> nn.Module:
    """Prune ``amount`` of the remaining channels along ``dim`` at random (``dim`` defaults to -1,
    as for the class; torch's function requires it)."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(
    module: nn.Module, name: str, amount: Amount, n: float | int | str, dim: int = -1,
    importance_scores: torch.Tensor | None = None,
) -> nn.Module:
    """Prune ``amount`` of the remaining channels along ``dim`` with the smallest L``n`` norm
    (of the weights, or of ``importance_scores``)."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module: nn.Module, name: str, mask: torch.Tensor) -> nn.Module:
    """Prune ``module.<name>`` where ``mask`` is 0/False, keeping earlier pruning."""
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(
    parameters: Iterable[tuple[nn.Module, str]],
    pruning_method: type,
    importance_scores: dict[tuple[nn.Module, str], torch.Tensor] | None = None,
    **kwargs: Any,
) -> None:
    """Rank the weights of all ``parameters`` together and prune the lowest, as ``pruning_method(**kwargs)``
    would on their concatenation, without concatenating them.

    ``pruning_method`` is a method class with ``PRUNING_TYPE == "unstructured"``: ``L1Unstructured``,
    ``RandomUnstructured``, ``Identity`` (these, or torch's classes of the same names, run on the
    engine), or your own class (run through its ``compute_mask``, on a concatenated copy as in torch).
    """
    if not isinstance(parameters, Iterable):
        raise PruningTypeError(f"global_unstructured(): parameters must be an iterable of (module, name) pairs, got {type(parameters).__name__}")
    importance_scores = {} if importance_scores is None else importance_scores
    if not isinstance(importance_scores, dict):
        raise PruningTypeError(
            f"global_unstructured(): importance_scores must be a dict {{(module, name): tensor}}, got {type(importance_scores).__name__}"
        )
    method = _TORCH_TWINS.get(pruning_method, pruning_method)(**kwargs)
    kind = getattr(method, "PRUNING_TYPE", None)
    if kind != "unstructured":
        raise PruningTypeError(
            f"global_unstructured() ranks single weights across tensors, so pruning_method must have PRUNING_TYPE "
            f"'unstructured'; {getattr(pruning_method, '__name__', pruning_method)} has {kind!r}. Prune channels layer by layer"
        )
    pairs = list(parameters)
    if not pairs:
        raise PruningError("global_unstructured() got no parameters; pass (module, name) pairs to rank together")
    targets, scores = _global_targets(pairs, importance_scores)
    if _on_engine(method):
        plan = method.plan(targets, scores, "global")  # type: ignore[attr-defined]
    else:
        plan = _global_by_compute_mask(method, targets, scores)
    apply_plan(plan)


def remove(module: nn.Module, name: str) -> nn.Module:
    """Make the pruning of ``module.<name>`` permanent: drop the mask, keep the zeros; returns ``module``."""
    if get_mask(module, name) is not None:
        remove_mask(module, name)
        return module
    if isinstance(module, nn.Module) and all(p is None for p in module._parameters.values()):
        _skip(module, name, "remove")
        return module
    hint = (
        "it was pruned by torch.nn.utils.prune; use torch's remove for it"
        if isinstance(module, nn.Module) and name + "_orig" in module._parameters
        else "prune it first; prune.is_pruned(module) tells whether anything in a module is pruned"
    )
    raise PruningError(f"{type(module).__name__}.{name} is not pruned by secateurs, so there is no pruning to remove: {hint}")
