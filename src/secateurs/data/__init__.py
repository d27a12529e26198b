"""Calibration-driven pruning: calibration sources, input statistics, the block-by-block walk, and the
methods that read data (Wanda, SparseGPT, Taylor, activations, OWL, block influence)."""
