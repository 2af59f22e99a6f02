"""The network: configs, parameters, weights, the skip network's shapes, its layers (MLX against PyTorch) and
MLX's CPU kernels."""
