"""Physical structural pruning: a dependency graph over any model, and surgery that makes it smaller.

``shrink(model, example_inputs, amount, granularity="channel"|"head"|"layer")`` removes channels,
attention heads or residual blocks and verifies the result against the masked model; ``build_graph``
exposes the analysis (groups, members, why a dimension keeps its size); ``save``/``load`` write and read
shrunk models without pickle. See docs/structural.md.
"""

from .api import shrink
from .graph import DependencyGraph, Group, Member, build_graph
from .patchers import register_patcher
from .persist import apply_structure, load, save, structure_of
from .report import GroupChange, ShrinkReport

__all__ = [
    "DependencyGraph",
    "Group",
    "GroupChange",
    "Member",
    "ShrinkReport",
    "apply_structure",
    "build_graph",
    "load",
    "register_patcher",
    "save",
    "shrink",
    "structure_of",
]
