"""The progress of a whole `dip batch`, for either engine: images done, running and failed, and the time left.

On a terminal it is a rich bar; elsewhere (a log file, a SLURM job's output) one plain line per image.
The time left is the batch's own pace so far (wall time per finished image), so it counts what runs in
parallel on a Ray cluster as well as one image after the other.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from dip_cli.app import err
from dip_cli.batch_work import Outcome, Status


class BatchProgress:
    """Counts of a batch's images, shown as they change; use as a context manager."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.total = total
        self.console = console if console is not None else err()
        self.bar: Progress | None = None
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
            )
        self.id: TaskID | None = None
        self.begun_at = time.perf_counter()
        self.started_count = self.running = self.done = self.failed = 0

    def __enter__(self) -> BatchProgress:
        self.begun_at = time.perf_counter()
        if self.bar is not None:
            self.bar.start()
            self.id = self.bar.add_task("batch", total=self.total, counts=self._counts(), eta=self.eta())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.stop()

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def eta(self) -> str:
        """The time left at the pace so far; `?` before the first image is finished."""
        from dip_core.run.estimate import duration

        if not self.finished:
            return "?"
        left = self.total - self.finished
        return duration((time.perf_counter() - self.begun_at) / self.finished * left) if left else "0 s"

    def _counts(self) -> str:
        return f"done {self.done}, running {self.running}, failed {self.failed}"

    def started(self, name: str) -> None:
        """One image started (the local engine: one at a time)."""
        self.started_count += 1
        self.running += 1
        if self.bar is None:
            self.console.print(f"[bold]{escape(name)}[/] ({self.started_count}/{self.total})", highlight=False)
        self.refresh()

    def set_running(self, running: int) -> None:
        """How many images run now (the Ray engine)."""
        self.running = running
        self.refresh()

    def ended(self, outcome: Outcome, running: int | None = None) -> None:
        """One image finished, well or not: its warnings and error, and the counts (`running`: how many run
        now, where the engine knows; else one less than before)."""
        self.running = max(0, self.running - 1) if running is None else running
        if outcome.status is Status.DONE:
            self.done += 1
        elif outcome.status is Status.FAILED:
            self.failed += 1
        say = self.console.print
        for warning in outcome.warnings:
            say(f"[yellow]warning:[/] {escape(f'{warning} ({outcome.image})')}", highlight=False, soft_wrap=True)
        if outcome.error is not None:
            say(f"[red]failed {escape(outcome.image)}:[/] {escape(outcome.error)}", highlight=False, soft_wrap=True)
        if self.bar is None:
            took = f" in {outcome.seconds:.1f} s" if outcome.seconds is not None else ""
            where = f" on {outcome.hostname}" if outcome.node_id is not None else ""
            retried = f" (attempt {outcome.attempts})" if (outcome.attempts or 1) > 1 else ""
            say(
                f"{outcome.image}: {outcome.status.value}{took}{where}{retried} [{self.finished}/{self.total}; "
                f"{self._counts()}; ETA {self.eta()}]",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
        self.refresh()

    def refresh(self) -> None:
        if self.bar is not None and self.id is not None:
            self.bar.update(self.id, completed=self.finished, counts=self._counts(), eta=self.eta())
