"""Drop-in replacements for other pruning APIs, built on secateurs' masks and engine.

``import secateurs.compat.prune as prune`` replaces ``import torch.nn.utils.prune as prune``:
same functions, same arguments, same masks, without ``weight_orig``, float masks or the
concatenated copy of the model that global pruning makes there. See ``docs/compat.md``.
"""

from secateurs.compat import prune

__all__ = ["prune"]
