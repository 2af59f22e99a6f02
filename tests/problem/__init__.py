"""The problem: image files, degradations (numpy and both backends, and `dip degrade`), masks, the task registry,
padding."""
