"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest

from dip_core.problem.degrade import add_noise
from tests.images import save, synthetic


@pytest.fixture
def noisy(tmp_path):
    """A small noisy photo of odd size, cat.png, alone in its folder (results are written beside it)."""
    return save(tmp_path / "cat.png", add_noise(synthetic(21, 25), 25, 0))
