"""Calibration-driven pruning: calibration sources, input statistics, the block-by-block walk, and the
methods that read data (Wanda, SparseGPT, Taylor, activations, OWL, block influence)."""

from secateurs.data.api import (
    DataPruneReport,
    available_methods,
    block_influence,
    collect_input_statistics,
    prune_with_data,
    unit_criterion,
)
from secateurs.data.calibration import Batch, Calibration, load_calibration, sample_examples
from secateurs.data.criteria import Activation, BlockInfluence, Taylor, Wanda
from secateurs.data.statistics import InputStatistics

__all__ = [
    "Activation",
    "Batch",
    "BlockInfluence",
    "Calibration",
    "DataPruneReport",
    "InputStatistics",
    "Taylor",
    "Wanda",
    "available_methods",
    "block_influence",
    "collect_input_statistics",
    "load_calibration",
    "prune_with_data",
    "sample_examples",
    "unit_criterion",
]
