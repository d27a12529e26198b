"""How pruning is held on a model: real zeros in the parameter plus a boolean mask beside it.

A pruned parameter keeps its name and its place in the state_dict; no copy of the original weight
is kept. The mask (``True`` = kept) is a non-persistent buffer ``<param>_mask`` on every module that
holds the parameter, so state_dict keys are those of the unpruned architecture, while ``copy.deepcopy``,
pickle and ``.to()`` carry the mask along.

While a mask is active the pruned positions stay exactly zero:

* a gradient hook zeroes the gradient reaching pruned positions;
* after every ``step()`` of any ``torch.optim`` optimizer the pruned positions are zeroed again,
  which covers momentum, Adam moments and decoupled weight decay;
* ``load_state_dict`` re-applies the mask to the loaded values.

Tensor hooks do not survive deepcopy or pickle, so a small picklable forward pre-hook re-attaches
them on the next forward pass; :func:`enforce` does the same on demand.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary

from secateurs.errors import PruningError

MASK_SUFFIX = "_mask"
_ZERO_CHUNK = 1 << 16
_MASKED_NAMES = "_secateurs_masked"


class _GradMask:
    """Tensor hook: zero the gradient at pruned positions. Finds the mask through its module, weakly."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = weakref.ref(module)
        self.name = name
        self.handle: torch.utils.hooks.RemovableHandle | None = None

    def mask(self) -> torch.Tensor | None:
        module = self.module()
        return None if module is None else get_mask(module, self.name)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        mask = self.mask()
        return grad if mask is None else torch.where(mask, grad, 0.0)


#: parameter -> its gradient hook; keyed by identity, never keeps a parameter alive.
_tracked: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _reapply_after_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    if len(_tracked) == 0:
        return
    with torch.no_grad():
        for group in optimizer.param_groups:
            for param in group["params"]:
                hook = _tracked.get(param)
                mask = None if hook is None else hook.mask()
                if mask is not None:
                    param.mul_(mask)


_STEP_HOOK = register_optimizer_step_post_hook(_reapply_after_step)


class _ReattachHooks:
    """Forward pre-hook (picklable): make sure the module's masked parameters are tracked."""

    def __call__(self, module: nn.Module, args: object) -> None:
        for name in getattr(module, _MASKED_NAMES, ()):
            _track(module, name)


def _remask_after_load(module: nn.Module, incompatible_keys: object) -> None:
    for name in getattr(module, _MASKED_NAMES, ()):
        _track(module, name)
        _zero_pruned(module, name)


def _track(module: nn.Module, name: str) -> None:
    param = module._parameters.get(name)
    if param is None:
        return
    hook = _tracked.get(param)
    if hook is None or hook.mask() is None:
        if hook is not None and hook.handle is not None:
            hook.handle.remove()
        hook = _GradMask(module, name)
        _tracked[param] = hook
    if hook.handle is None and param.requires_grad:
        hook.handle = param.register_hook(hook)


def _untrack(param: torch.Tensor) -> None:
    hook = _tracked.pop(param, None)
    if hook is not None and hook.handle is not None:
        hook.handle.remove()


def _zero_pruned(module: nn.Module, name: str) -> None:
    """Zero the pruned positions by multiplying with the mask, chunk by chunk: several times faster
    than a masked fill and no full-size temporary. Negative weights become -0.0, as in torch's pruning;
    a NaN/Inf at a pruned position survives a multiply, so then a masked fill clears it."""
    mask = get_mask(module, name)
    if mask is None:
        return
    with torch.no_grad():
        param = module._parameters[name]
        if param.is_contiguous() and mask.is_contiguous():
            flat, keep = param.view(-1), mask.view(-1)
            for start in range(0, flat.numel(), _ZERO_CHUNK):
                flat[start : start + _ZERO_CHUNK].mul_(keep[start : start + _ZERO_CHUNK])
        else:
            param.mul_(mask)
        if not bool(torch.isfinite(param.sum())):
            param.masked_fill_(~mask, 0)


def _is_our_hook(hook: object) -> bool:
    return isinstance(hook, _ReattachHooks) or hook is _remask_after_load


def get_mask(module: nn.Module, name: str) -> torch.Tensor | None:
    """The boolean keep-mask of ``module.<name>``, or None when it is not pruned."""
    if name not in getattr(module, _MASKED_NAMES, ()):
        return None
    return module._buffers.get(name + MASK_SUFFIX)


def set_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Hold ``keep`` (bool, shaped like the parameter) as the mask of ``module.<name>`` and zero the rest.

    The mask replaces any earlier one: combine masks before calling. Validation happens before anything
    is written, so a bad mask leaves the module untouched.
    """
    param = module._parameters.get(name)
    if param is None:
        raise PruningError(f"{type(module).__name__} has no parameter {name!r} to mask")
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool:
        raise PruningError(f"mask for {name!r} must be a bool tensor (True = keep), got {getattr(keep, 'dtype', keep)}")
    if keep.shape != param.shape:
        raise PruningError(f"mask shape {tuple(keep.shape)} does not match parameter {name!r} {tuple(param.shape)}")
    buffer_name = name + MASK_SUFFIX
    owned = getattr(module, _MASKED_NAMES, ())
    if name not in owned and (buffer_name in module._buffers or buffer_name in module._parameters or hasattr(module, buffer_name)):
        raise PruningError(
            f"{type(module).__name__} already has an attribute {buffer_name!r} that secateurs did not create; "
            "rename it before pruning this parameter"
        )
    keep = keep.to(param.device)
    module.register_buffer(buffer_name, keep, persistent=False)
    if name not in owned:
        setattr(module, _MASKED_NAMES, (*owned, name))
    if not any(map(_is_our_hook, module._forward_pre_hooks.values())):
        module.register_forward_pre_hook(_ReattachHooks())
    if not any(map(_is_our_hook, module._load_state_dict_post_hooks.values())):
        module.register_load_state_dict_post_hook(_remask_after_load)
    _track(module, name)
    _zero_pruned(module, name)


def remove_mask(module: nn.Module, name: str) -> None:
    """Make the pruning of ``module.<name>`` permanent: drop the mask, keep the zeros."""
    owned = getattr(module, _MASKED_NAMES, ())
    if name not in owned:
        raise PruningError(
            f"parameter {name!r} of {type(module).__name__} is not pruned, so there is no mask to remove; "
            "check secateurs.is_pruned() first"
        )
    _zero_pruned(module, name)
    del module._buffers[name + MASK_SUFFIX]
    remaining = tuple(n for n in owned if n != name)
    setattr(module, _MASKED_NAMES, remaining)
    param = module._parameters.get(name)
    if param is not None:
        _untrack(param)
    if not remaining:
        delattr(module, _MASKED_NAMES)
        for hooks in (module._forward_pre_hooks, module._load_state_dict_post_hooks):
            for key in [k for k, hook in hooks.items() if _is_our_hook(hook)]:
                del hooks[key]


def masked_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """Yield ``(qualified_name, module, param_name, mask)`` for every masked parameter, tied ones once."""
    seen: set[int] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name in getattr(module, _MASKED_NAMES, ()):
            param = module._parameters.get(name)
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{module_name}.{name}" if module_name else name), module, name, module._buffers[name + MASK_SUFFIX]


def is_pruned(module: nn.Module) -> bool:
    """True when any parameter of ``module`` (or its submodules) holds an active mask. The argument's name is
    that of ``torch.nn.utils.prune.is_pruned``, which :mod:`secateurs.compat.prune` replaces with this."""
    return any(getattr(sub, _MASKED_NAMES, ()) for sub in module.modules())


def enforce(model: nn.Module) -> int:
    """Zero every pruned position again and re-attach gradient hooks; returns the number of masks.

    Call it after editing weights by hand (``param.data.copy_``, custom init) while masks are active.
    """
    count = 0
    for module in model.modules():
        for name in getattr(module, _MASKED_NAMES, ()):
            _track(module, name)
            _zero_pruned(module, name)
            count += 1
    return count


def finalize(model: nn.Module) -> int:
    """Make all pruning permanent: drop every mask, keep the zeros. Returns how many masks were removed.

    Afterwards the model is an ordinary model whose state_dict loads into the unpruned architecture.
    """
    count = 0
    for module in model.modules():
        for name in tuple(getattr(module, _MASKED_NAMES, ())):
            remove_mask(module, name)
            count += 1
    return count


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bit-pack a bool mask into uint8 (8 weights per byte, first weight in the highest bit)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    numel = 1
    for size in shape:
        numel *= size
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.to(torch.uint8).unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:numel].to(torch.bool).reshape(shape)


def mask_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks keyed by qualified parameter name, bit-packed, for checkpoints (see :func:`load_mask_state_dict`)."""
    return {name: pack_mask(mask) for name, _module, _param, mask in masked_parameters(model)}


def load_mask_state_dict(model: nn.Module, packed: dict[str, torch.Tensor]) -> None:
    """Re-create masks saved by :func:`mask_state_dict` on a model of the same architecture."""
    holders: dict[str, list[tuple[nn.Module, str]]] = {}
    by_id: dict[int, str] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for pname, param in module._parameters.items():
            if param is None:
                continue
            qualified = f"{module_name}.{pname}" if module_name else pname
            key = by_id.setdefault(id(param), qualified)
            holders.setdefault(key, []).append((module, pname))
    missing = [name for name in packed if name not in holders]
    if missing:
        raise PruningError(f"masks for unknown parameters {missing[:5]}; was the checkpoint made for another model?")
    masks = {}
    for name, bits in packed.items():
        module, pname = holders[name][0]
        masks[name] = unpack_mask(bits, module._parameters[pname].shape)
    for name, keep in masks.items():
        for module, pname in holders[name]:
            set_mask(module, pname, keep)
