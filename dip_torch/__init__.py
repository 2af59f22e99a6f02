"""The PyTorch reference backend (CPU, CUDA, MPS)."""
