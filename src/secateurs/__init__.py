"""secateurs: prune PyTorch networks, make them genuinely smaller, help them recover, and measure it."""

from .criteria import Criterion, Custom, LnNorm, Magnitude, Random, available_criteria, get_criterion, register_criterion
from .engine import PruneReport, apply_plan, plan_masks, prune, prune_targets
from .errors import PruningError, SecateursError, SelectionError, UnsupportedOperationError
from .masks import enforce, finalize, get_mask, is_pruned, load_mask_state_dict, mask_state_dict, remove_mask, set_mask
from .patterns import NM, Pattern, Structured, Unstructured, parse_pattern
from .selection import Selection, Skipped, select
from .summary import Summary, summary
from .targets import Target

__version__ = "0.1.0"

# The layers above the core (imported after it: they build on it). Importing them also registers their
# criteria (wanda, sparsegpt's helpers, taylor, activation, block_influence, movement).
from .data_aware import DataPruneReport, block_influence, collect_input_statistics, prune_with_data  # noqa: E402
from .io import load_pruned, save_pruned  # noqa: E402
from .measure import Measurements, measure  # noqa: E402
from .models import LoadedModel, load_model  # noqa: E402
from .recovery import PruningController, recover  # noqa: E402
from .structural import ShrinkReport, shrink  # noqa: E402

remove = finalize

__all__ = [
    "NM",
    "DataPruneReport",
    "LoadedModel",
    "Measurements",
    "PruningController",
    "ShrinkReport",
    "block_influence",
    "collect_input_statistics",
    "load_model",
    "load_pruned",
    "measure",
    "prune_with_data",
    "recover",
    "save_pruned",
    "shrink",
    "Criterion",
    "Custom",
    "LnNorm",
    "Magnitude",
    "Pattern",
    "PruneReport",
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
