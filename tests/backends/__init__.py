"""Backends: picking one (lazy imports, clear errors) and the cross-check of MLX against PyTorch."""
