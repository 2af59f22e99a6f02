"""How long a run will take on this machine: `dip_core.run.estimate.measure`, timed once per (backend, device, image
size, preset, network) and kept for the server's life.

Timing takes a few seconds (a warm-up step, then at least half a second of steps), so it runs on a thread of its
own and the page asks again until the answer is ready. It is not queued behind the device's runs: timed while a
run is going on the same device, it is slower than that run will see alone, and the answer says so (`busy`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dip_core.errors import UserError, messages
from dip_core.run.memory import MemoryError_

log = logging.getLogger("dip_ui")

Key = tuple[Any, ...]  # (backend, device, height, width, channels, preset, net)


@dataclass(frozen=True)
class Timing:
    """One estimate: `state` is timing, ready or error."""

    state: str
    ms_per_iter: float | None = None
    device: str | None = None  # the device it resolved to (cpu, cuda, metal, ...)
    busy: bool = False  # timed while a run was going on the same device
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "ms_per_iter": self.ms_per_iter, "device": self.device, "busy": self.busy,
                "message": self.message}  # fmt: skip


class Estimates:
    """The cache of timings and the one thread that measures them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timings: dict[Key, Timing] = {}
        self._again: set[Key] = set()  # busy timings taken again (once each)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dip-ui-estimate")

    def get(self, key: Key, measure: Callable[[], tuple[float, str, bool]], device_busy: bool) -> Timing:
        """The timing of `key`. The first ask starts `measure` (-> ms per step, device, busy) and answers `timing`;
        a timing taken while the device was busy is taken again (once) when asked while it is free."""
        with self._lock:
            known = self._timings.get(key)
            if known is not None and not (known.busy and not device_busy and key not in self._again):
                return known
            if known is None:
                self._timings[key] = known = Timing("timing")
            else:
                self._again.add(key)
        self._pool.submit(self._measure, key, measure)
        return known

    def ms_per_iter(self, key: Key) -> float | None:
        """A finished timing of `key`, if there is one."""
        with self._lock:
            known = self._timings.get(key)
        return known.ms_per_iter if known is not None else None

    def _measure(self, key: Key, measure: Callable[[], tuple[float, str, bool]]) -> None:
        try:
            ms, device, busy = measure()
            timing = Timing("ready", ms, device, busy)
        except MemoryError_ as exc:  # the page's choices, not the command line's
            timing = Timing("error", message=exc.page)
        except UserError as exc:
            timing = Timing("error", message="; ".join(messages(exc)))
        except Exception as exc:  # reported to the page, and logged in full here
            log.exception("timing %s failed", key)
            timing = Timing("error", message=f"timing failed: {type(exc).__name__}: {exc}")
        with self._lock:
            self._timings[key] = timing

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
