"""The web app's limits and secrets: upload sizes, image decoding that trusts nothing the client says, the URL
token and the session and run ids.

Every id is `secrets.token_urlsafe` (unguessable); tokens are compared in constant time. An upload is an image
only if Pillow decodes it, with a restricted set of formats (no plug-in that runs a program, such as EPS), after
its header says how many pixels it has: a small file that would decode to a huge image is refused before any
pixel is decoded. The file name and content type the client sends are ignored.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from dip_core.errors import UserError
from dip_core.problem.image import Image, from_pil

# Formats Pillow may decode an upload as (Pillow tries only these plug-ins).
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Limits:
    """What one request may cost."""

    max_bytes: int = 20 * 1000 * 1000  # an uploaded file
    max_pixels: int = 16 * 1000 * 1000  # width x height of an uploaded image
    max_iters: int = 100_000  # iterations of one run
    runs_per_session: int = 4  # queued or running at once, per browser session
    kept_per_session: int = 20  # runs kept (with their folders) per session; the oldest finished go first
    images_per_session: int = 16  # uploads kept (on disk) per session; the oldest go first
    pixels_per_session: int = 64 * 1000 * 1000  # pixels of the uploads a session keeps; the oldest go first
    pixels_in_all: int = 256 * 1000 * 1000  # pixels of every session's uploads; past it an upload is refused
    uploads_at_once: int = 4  # bodies being received at once, in max_bytes: past it a request is refused
    session_idle_s: float = 3600.0  # a session not heard from for this long that holds no run ends
    sessions: int = 256  # past this many, the idlest session holding nothing makes room (else: refused)
    new_sessions_per_minute: int = 30  # sessions made per minute, at most


class UploadRefused(UserError):
    """An upload that is too large or not an image; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


def too_large(size: int | None, limits: Limits) -> UploadRefused:
    """The refusal of a file of `size` bytes (None: not known, only that it is over the limit)."""
    got = f"the file is {megabytes(size)}" if size is not None else f"the file is over {megabytes(limits.max_bytes)}"
    return UploadRefused(
        f"{got}; the upload limit is {megabytes(limits.max_bytes)} (`dip ui --max-upload-mb` changes it)", 413
    )


def decode_image(source: bytes | Path, limits: Limits) -> Image:
    """The upload (its bytes, or the file they were streamed to) as a dip Image (EXIF orientation applied), or
    UploadRefused saying why not."""
    size = source.stat().st_size if isinstance(source, Path) else len(source)
    if size > limits.max_bytes:
        raise too_large(size, limits)
    if not size:
        raise UploadRefused("the file is empty")

    def opened() -> PILImage.Image:
        return PILImage.open(source if isinstance(source, Path) else io.BytesIO(source), formats=FORMATS)

    try:
        with opened() as im:
            width, height = im.size
            _check_pixels(width, height, limits)
            im.verify()  # the file's structure (checksums of PNG chunks...) before decoding pixels
        with opened() as im:
            im.load()
            return from_pil(ImageOps.exif_transpose(im))
    except UploadRefused:
        raise
    except UnidentifiedImageError:
        raise UploadRefused(f"not an image: dip ui reads {', '.join(FORMATS)} files") from None
    except PILImage.DecompressionBombError:
        raise UploadRefused("the image is too large to decode safely", 413) from None
    except UserError as exc:  # a mode dip cannot restore
        raise UploadRefused(str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadRefused(f"the image is damaged or truncated: {exc}") from None


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise UploadRefused(
            f"the image is {width}x{height} = {width * height / 1e6:.1f} Mpx; the limit is "
            f"{limits.max_pixels / 1e6:g} Mpx (`dip ui --max-megapixels` changes it)",
            413,
        )


def new_id() -> str:
    """An unguessable id (runs, uploads, sessions)."""
    return secrets.token_urlsafe(18)


def new_token() -> str:
    """The secret a server on a non-loopback address requires in its URL."""
    return secrets.token_urlsafe(24)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a secret sent by the client with the server's."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def listens_everywhere(host: str) -> bool:
    """Whether binding `host` listens on every address: empty, `::`, 0.0.0.0, or a short form of it (`0`)."""
    name = host.strip("[]")
    if not name:
        return True
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        pass
    try:
        return socket.inet_aton(name) == bytes(4)  # the forms the C library accepts: `0`, `0.0`, `0000`...
    except OSError:
        return False


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str | None, default: str = "image") -> str:
    """A file stem for downloads from the name the client gave: letters, digits, `._-` only, 48 at most."""
    stem = (name or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = _SAFE_NAME.sub("_", stem).strip("._-")[:48]
    return stem or default
