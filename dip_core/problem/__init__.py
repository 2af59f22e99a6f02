"""What is being restored: the task registry, presets, the problem made from the user's files (operator,
observation, mask), degradations, image I/O, metrics, padding to the network's sizes, the example scene."""
