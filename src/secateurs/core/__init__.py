"""The pruning core: what to score (criteria), what shape (patterns), how much where (amounts,
selection, ranking) and the masks that apply it. Knows nothing of data, structure or files."""
