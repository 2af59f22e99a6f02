"""dip's version, as installed (pyproject.toml), for `dip --version` and every report."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def dip_version() -> str:
    """The installed version, or a note that dip runs from a checkout that was not installed."""
    try:
        return version("dip")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"
