"""The demo: a small CNN trained on a bundled data set, pruned by every method at every ratio.

* :mod:`.datasets` - the bundled data sets (scikit-learn digits, MNIST-1D);
* :mod:`.model` - the demo CNN, its training through :func:`secateurs.recovery.fit`, and its cache;
* :mod:`.sweep` - the experiment: prune a copy every way, measure each copy;
* :mod:`.tables`, :mod:`.reading` - the printed report and its plain-English reading.
"""

from secateurs.demo.datasets import DATASETS, DEFAULT_DATASET, Dataset, load_dataset
from secateurs.demo.model import accuracy, build_model, trained_model
from secateurs.demo.sweep import DemoConfig, default_config, parse_ratios, run_demo
from secateurs.demo.tables import format_report

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
