"""The demo: a small CNN trained on a bundled data set, pruned by every method at every ratio."""

from secateurs.demo.datasets import DATASETS, Dataset, load_dataset
from secateurs.demo.sweep import (
    DEFAULT_DATASET,
    DemoConfig,
    accuracy,
    build_model,
    default_config,
    format_report,
    parse_ratios,
    run_demo,
    trained_model,
)

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "Dataset",
    "DemoConfig",
    "accuracy",
    "build_model",
    "default_config",
    "format_report",
    "load_dataset",
    "parse_ratios",
    "run_demo",
    "trained_model",
]
