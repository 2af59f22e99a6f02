"""The optimisation loop, framework-neutral: its settings, the stopping rules, the numpy references of the
backends' monitors and of ES-WMV, and checkpoints."""
