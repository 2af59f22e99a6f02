"""Per-user folders: where benchmark results and reports go unless a command is told otherwise.

Not the repository's bench/results and bench/report: those hold the measurements the
docs quote, and change only when a command is pointed at them (`--out bench/results`).
"""

from __future__ import annotations

from pathlib import Path

COMMITTED_RESULTS = Path("bench/results")  # the repository's results, relative to a checkout
COMMITTED_REPORT = Path("bench/report")


def user_bench_dir() -> Path:
    """dip's per-user benchmark folder: ~/.local/share/dip/bench on Linux ($XDG_DATA_HOME/dip/bench when set),
    ~/Library/Application Support/dip/bench on macOS (platformdirs' user data folder)."""
    from platformdirs import user_data_path

    return user_data_path("dip", appauthor=False) / "bench"


def bench_results_dir() -> Path:
    """Where `dip bench speed|quality` and the bench scripts write their result JSON by default."""
    return user_bench_dir() / "results"


def bench_report_dir() -> Path:
    """Where `dip bench report` writes report.md and its charts by default."""
    return user_bench_dir() / "report"
