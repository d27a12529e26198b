"""Calibration-driven pruning: calibration sources, input statistics, the block-by-block walk, and the
methods that read data (Wanda, SparseGPT, Taylor, activations, OWL, block influence)."""

from secateurs.data.calibration import (
    Batch,
    Calibration,
    TokenizerNeededError,
    load_calibration,
    sample_examples,
)
from secateurs.data.criteria import Activation, BlockInfluence, Taylor, Wanda
from secateurs.data.gradients import accumulate_gradients
from secateurs.data.measuring import (
    block_influence,
    collect_input_statistics,
    unit_criterion,
)
from secateurs.data.methods import (
    BlockRequest,
    DataMethod,
    Needs,
    available_methods,
    register_method,
)
from secateurs.data.pruning import DataPruneReport, prune_with_data
from secateurs.data.sources import check_calibration_source
from secateurs.data.statistics import InputStatistics

__all__ = [
    "Activation",
    "Batch",
    "BlockInfluence",
    "BlockRequest",
    "Calibration",
    "DataMethod",
    "DataPruneReport",
    "InputStatistics",
    "Needs",
    "Taylor",
    "TokenizerNeededError",
    "Wanda",
    "accumulate_gradients",
    "available_methods",
    "block_influence",
    "check_calibration_source",
    "collect_input_statistics",
    "load_calibration",
    "prune_with_data",
    "register_method",
    "sample_examples",
    "unit_criterion",
]
