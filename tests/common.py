"""What tests of several folders share: the repository's root, the tiny network's settings, a CLI runner, and a check
of benchmark numbers. (Fixtures used everywhere are in tests/conftest.py; test images in tests/images.py.)"""

from __future__ import annotations

import math
from pathlib import Path

from typer.testing import CliRunner

# The repository: tests/ sits at its top, and its test files one folder below (tests/<feature>/test_*.py).
ROOT = Path(__file__).resolve().parents[1]

# The tiny network with 4 input channels: the quick runs' setting, as keyword arguments of restore() ...
TINY_NET = {"net": "tiny", "input_channels": 4}
# ... and as options of `dip run` and `dip batch`.
TINY_NET_ARGS = ["--net", "tiny", "--input-channels", "4"]

# Invokes the `dip` app in this process (runner.invoke(app, [...])); it keeps no state between invocations.
runner = CliRunner()


def positive(x) -> bool:
    """A benchmark's number: an int or float, finite and above zero."""
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0
