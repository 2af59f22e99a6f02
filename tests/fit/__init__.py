"""The loop: reproducibility, monitors, stopping rules (scripted runs, the study's replay) and checkpoints."""
