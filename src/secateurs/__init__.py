"""secateurs: prune PyTorch networks, make them genuinely smaller, help them recover, and measure it."""

from secateurs.core.criteria import (
    Criterion,
    Custom,
    LnNorm,
    Magnitude,
    Random,
    available_criteria,
    get_criterion,
    register_criterion,
)
from secateurs.core.engine import PruneReport, apply_plan, plan_masks, prune, prune_targets
from secateurs.core.masks import (
    enforce,
    finalize,
    get_mask,
    is_pruned,
    load_mask_state_dict,
    mask_state_dict,
    remove_mask,
    set_mask,
)
from secateurs.core.patterns import NM, Pattern, Structured, Unstructured, parse_pattern
from secateurs.core.selection import Selection, Skipped, select
from secateurs.core.summary import Summary, summary
from secateurs.core.targets import Target

# The layers above the core (imported after it: they build on it). Importing them also registers their
# criteria (wanda, sparsegpt's helpers, taylor, activation, block_influence, movement).
from secateurs.data import DataPruneReport, block_influence, collect_input_statistics, prune_with_data  # noqa: E402
from secateurs.errors import NothingPrunedError, PruningError, SecateursError, SelectionError, UnsupportedOperationError
from secateurs.measure import LatencyComparison, Measurements, compare_latency, measure  # noqa: E402
from secateurs.recovery import PruningController, recover  # noqa: E402
from secateurs.sources import LoadedModel, load_model, load_pruned  # noqa: E402
from secateurs.storage import save_pruned  # noqa: E402
from secateurs.streaming import StreamReport, prune_streaming  # noqa: E402
from secateurs.structural import ShrinkReport, shrink  # noqa: E402
from secateurs import analysis  # noqa: E402 - sc.analysis.sensitivity(...), parse_metric(...)
from secateurs.version import __version__

remove = finalize

__all__ = [
    "NM",
    "DataPruneReport",
    "LoadedModel",
    "LatencyComparison",
    "Measurements",
    "PruningController",
    "ShrinkReport",
    "StreamReport",
    "block_influence",
    "collect_input_statistics",
    "load_model",
    "load_pruned",
    "measure",
    "compare_latency",
    "prune_with_data",
    "prune_streaming",
    "recover",
    "save_pruned",
    "shrink",
    "Criterion",
    "Custom",
    "LnNorm",
    "Magnitude",
    "Pattern",
    "PruneReport",
    "NothingPrunedError",
    "PruningError",
    "Random",
    "SecateursError",
    "Selection",
    "SelectionError",
    "Skipped",
    "Structured",
    "Summary",
    "Target",
    "UnsupportedOperationError",
    "Unstructured",
    "apply_plan",
    "available_criteria",
    "enforce",
    "finalize",
    "get_criterion",
    "get_mask",
    "is_pruned",
    "load_mask_state_dict",
    "mask_state_dict",
    "parse_pattern",
    "plan_masks",
    "prune",
    "prune_targets",
    "register_criterion",
    "remove",
    "remove_mask",
    "select",
    "set_mask",
    "summary",
]
