"""A run from the user's side: the Python API (restore, prepare), run options, tiled runs, estimates of time
and memory, the cross-check of two backends, plots."""
