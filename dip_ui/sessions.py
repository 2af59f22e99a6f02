"""Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, and what belongs to it (its uploads,
kept in memory, and its runs). Nothing of one session is reachable from another's requests.

A session ends when it has not been heard from for `Limits.session_idle_s` and has nothing queued or running
(the page polls while it is open), or when the server stops; its runs' folders go with it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from dip_core.image import Image
from dip_ui.security import Limits, new_id

COOKIE = "dip_session"


@dataclass
class Upload:
    """An uploaded image, decoded and kept in memory (never on disk under a name the client chose)."""

    id: str
    image: Image
    name: str  # a safe stem of the client's file name, for download names only
    preview: bytes  # an 8-bit PNG the browser can show (TIFF, 16-bit, EXIF orientation applied)


@dataclass
class Session:
    id: str
    seen: float = field(default_factory=time.monotonic)
    uploads: OrderedDict[str, Upload] = field(default_factory=OrderedDict)


class Sessions:
    """Every live session; `busy(session)` says whether a session still has work queued or running."""

    def __init__(self, limits: Limits, busy: Callable[[Session], bool], ended: Callable[[Session], None]) -> None:
        self.limits = limits
        self._busy = busy
        self._ended = ended
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def new(self) -> Session:
        session = Session(new_id())
        with self._lock:
            self._sessions[session.id] = session
        self.sweep()
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this cookie (marked as heard from), or None."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.seen = time.monotonic()
        return session

    def add_upload(self, session: Session, upload: Upload) -> None:
        """Keep an upload; past `images_per_session` the least recently used is forgotten (a run keeps its own
        copy), so the image a user runs again and again stays while the masks sent with older runs go."""
        with self._lock:
            session.uploads[upload.id] = upload
            while len(session.uploads) > self.limits.images_per_session:
                session.uploads.popitem(last=False)

    def upload(self, session: Session, upload_id: str | None) -> Upload | None:
        """An upload of this session (now the last to be forgotten), or None."""
        with self._lock:
            upload = session.uploads.get(upload_id) if upload_id else None
            if upload is not None:
                session.uploads.move_to_end(upload.id)
            return upload

    def sweep(self) -> None:
        """End the sessions idle for longer than the limit, and the longest idle past `limits.sessions` sessions,
        but never one with something queued or running."""
        now = time.monotonic()
        with self._lock:
            by_age = sorted(self._sessions.values(), key=lambda s: s.seen)
            extra = max(0, len(by_age) - self.limits.sessions)
            idle = [s for k, s in enumerate(by_age) if k < extra or now - s.seen > self.limits.session_idle_s]
        for session in idle:
            if not self._busy(session):
                with self._lock:
                    self._sessions.pop(session.id, None)
                self._ended(session)

    def close(self) -> None:
        """End every session (the server stops)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            self._ended(session)
