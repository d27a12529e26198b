"""Physical structural pruning: a dependency graph over any model, and surgery that makes it smaller.

``shrink(model, example_inputs, amount, granularity="channel"|"head"|"layer")`` removes channels,
attention heads or residual blocks and verifies the result against the masked model; ``build_graph``
exposes the analysis (groups, members, why a dimension keeps its size). Shrunk models are saved and
loaded like any pruned model, with ``secateurs.save_pruned`` and ``secateurs.load_pruned``. See docs/structural.md.
"""

from secateurs.structural.api import shrink
from secateurs.structural.graph import DependencyGraph, Group, Member, build_graph
from secateurs.structural.patchers import register_patcher
from secateurs.structural.persist import apply_structure, structure_of
from secateurs.structural.report import GroupChange, ShrinkReport

__all__ = [
    "DependencyGraph",
    "Group",
    "GroupChange",
    "Member",
    "ShrinkReport",
    "apply_structure",
    "build_graph",
    "register_patcher",
    "shrink",
    "structure_of",
]
