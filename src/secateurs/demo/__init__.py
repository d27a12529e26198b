"""The demo: a small CNN trained on a bundled data set, pruned by every method at every ratio."""
