"""Ctrl-C and SIGTERM during `dip run`: the first ends the run, and nothing after it is lost.

The first signal raises KeyboardInterrupt in the run: the loop stops and hands back its best result so far,
which is then written. Every later signal (a second Ctrl-C 10 ms after the first, SIGTERM sent twice, a
signal while the outputs are being written) is only noted: raised too, it would land in the middle of that
rescue and throw away the result the first one asked to keep. The process ends with 130 once the outputs are
on disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunSignals:
    """The state of the signals of one run: `signalled` once any came; `hold()` notes even the first."""

    def __init__(self) -> None:
        self.signalled = False
        self.holding = False

    def hold(self) -> None:
        """From now on (the outputs are being written) no signal interrupts anything: each is only noted."""
        self.holding = True

    def handle(self, signum: int, frame: Any) -> None:
        first = not self.signalled and not self.holding
        self.signalled = True
        if first:
            raise KeyboardInterrupt


@contextlib.contextmanager
def run_signals() -> Iterator[RunSignals]:
    """Install `RunSignals`' handler for SIGINT and SIGTERM for the block; the previous handlers after it."""
    signals = RunSignals()
    try:
        previous = {sig: signal.signal(sig, signals.handle) for sig in SIGNALS}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield signals
        return
    try:
        yield signals
    finally:  # a handler set outside Python reads None: the default stands in for it
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def quiet_after_exit(code: int = 130) -> None:
    """Once the command is over, a signal while Python shuts down (joining the threads of torch or MLX in its
    atexit work) ends the process at once, with `code`, instead of printing "Exception ignored in atexit"."""

    def leave(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    with contextlib.suppress(ValueError):  # not the main thread
        for sig in SIGNALS:
            signal.signal(sig, leave)
