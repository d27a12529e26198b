"""Files: atomic writes, the sparse weights format, the manifest, and pruned-model directories."""
