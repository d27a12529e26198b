"""Physical structural pruning: a dependency graph over any model, and surgery that makes it smaller."""

from .api import GroupChange, ShrinkReport, shrink
from .graph import DependencyGraph, Group, Member, build_graph
from .patchers import register_patcher

__all__ = ["DependencyGraph", "Group", "GroupChange", "Member", "ShrinkReport", "build_graph", "register_patcher", "shrink"]
