"""Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, and what belongs to it (its uploads
and its runs). Nothing of one session is reachable from another's requests.

Uploads are kept on disk, in the server's temporary folder under random names, as the client sent them, and
decoded only when a run or a timing needs them: what a session holds costs disk, not memory. Their pixels are
bounded per session (the oldest uploads are forgotten first) and for the whole server (a new one is refused).

A session is made only when the page asks for one (`POST /api/session`, same origin, JSON), never by a plain
page load, and no more than `Limits.new_sessions_per_minute` a minute. Results are never lost to others' traffic:

- a session that holds runs (finished or not) lives until its user deletes them or the server stops;
- a session with no runs ends after `Limits.session_idle_s` without a request (an open page asks every few
  minutes, so only a closed page's session ends so);
- past `Limits.sessions` sessions, the idlest one holding nothing (no run, no upload) makes room for a new one;
  when every session holds something, a new session is refused (503) rather than one of them ended.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dip_core.problem.image import Image
from dip_ui.security import Limits, UploadRefused, decode_image, new_id

COOKIE = "dip_session"


class SessionRefused(UploadRefused):
    """A new session refused: too many made in the last minute (429), or every session holds something (503)."""


@dataclass
class Upload:
    """An uploaded image: the file as sent and its preview, on disk under names of the server's (never one the
    client chose), and what its decoding found. `image()` decodes it again when a run or a timing needs it."""

    id: str
    name: str  # a safe stem of the client's file name, for download names only
    path: Path  # the file as the client sent it
    preview: Path  # an 8-bit PNG the browser can show (TIFF, 16-bit, EXIF orientation applied)
    width: int
    height: int
    channels: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def image(self, limits: Limits) -> Image:
        """The upload decoded (the same checks as when it came)."""
        return decode_image(self.path, limits)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.preview.unlink(missing_ok=True)


@dataclass
class Session:
    id: str
    seen: float = field(default_factory=time.monotonic)
    uploads: OrderedDict[str, Upload] = field(default_factory=OrderedDict)


class Sessions:
    """Every live session; `holds(session)` says whether a session has runs (results that must not be lost)."""

    def __init__(self, limits: Limits, holds: Callable[[Session], bool], ended: Callable[[Session], None]) -> None:
        self.limits = limits
        self._holds = holds
        self._ended = ended
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._created: deque[float] = deque()  # when the sessions of the last minute were made
        self.folder = Path(tempfile.mkdtemp(prefix="dip-ui-uploads-"))  # every session's uploads

    def new(self) -> Session:
        """A new session, if the rate and count limits allow one (SessionRefused if not)."""
        self.sweep()
        now = time.monotonic()
        with self._lock:
            while self._created and now - self._created[0] > 60.0:
                self._created.popleft()
            if len(self._created) >= self.limits.new_sessions_per_minute:
                raise SessionRefused("too many new sessions in the last minute: try again in a minute", 429)
            room = None
            if len(self._sessions) >= self.limits.sessions:
                idlest = sorted(self._sessions.values(), key=lambda s: s.seen)
                room = next((s for s in idlest if not s.uploads and not self._holds(s)), None)
                if room is None:
                    raise SessionRefused(
                        f"the server already has {len(self._sessions)} sessions holding results or uploads: "
                        "delete some runs, or restart `dip ui`",
                        503,
                    )
                del self._sessions[room.id]
            self._created.append(now)
            session = Session(new_id())
            self._sessions[session.id] = session
        if room is not None:
            self._ended(room)
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
        """Keep an upload; past `images_per_session` uploads or `pixels_per_session` pixels the least recently
        used are forgotten (a run keeps its own copy), so the image a user runs again and again stays while the
        masks sent with older runs go. Past `pixels_in_all` for the whole server, the upload is refused (503)."""
        limits = self.limits
        with self._lock:
            kept = list(session.uploads.values())
            own = sum(u.pixels for u in kept) + upload.pixels
            forgotten = []
            while kept and (len(kept) >= limits.images_per_session or own > limits.pixels_per_session):
                forgotten.append(kept.pop(0))
                own -= forgotten[-1].pixels
            others = sum(u.pixels for s in self._sessions.values() if s is not session for u in s.uploads.values())
            if others + own > limits.pixels_in_all:
                upload.remove()
                raise UploadRefused(
                    f"the server already holds {others / 1e6:.1f} Mpx of images (at most {limits.pixels_in_all / 1e6:g}"
                    " Mpx): try again once other runs are deleted",
                    503,
                )
            for old in forgotten:
                del session.uploads[old.id]
            session.uploads[upload.id] = upload
        for old in forgotten:
            old.remove()

    def upload(self, session: Session, upload_id: str | None) -> Upload | None:
        """An upload of this session (now the last to be forgotten), or None."""
        with self._lock:
            upload = session.uploads.get(upload_id) if upload_id else None
            if upload is not None:
                session.uploads.move_to_end(upload.id)
            return upload

    def sweep(self) -> None:
        """End the sessions not heard from for longer than the limit that hold no run (their uploads go)."""
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.seen > self.limits.session_idle_s]
            idle = [s for s in idle if not self._holds(s)]  # under the lock: no run slips in between
            for session in idle:
                del self._sessions[session.id]
        for session in idle:
            for upload in session.uploads.values():
                upload.remove()
            self._ended(session)

    def close(self) -> None:
        """End every session (the server stops)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            self._ended(session)
        shutil.rmtree(self.folder, ignore_errors=True)
