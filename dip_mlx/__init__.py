"""The MLX backend (Metal on Apple silicon, CPU on Linux, CUDA via mlx[cuda12])."""

from dip_mlx.blas import load_blas

# Must run before anything imports mlx.core: see dip_mlx/blas.py.
BLAS = load_blas()
