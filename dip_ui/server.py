"""The web app of `dip ui`: a page of our own (dip_ui/static) and a small JSON API, on Starlette.

Why Starlette (and uvicorn) rather than FastAPI or Gradio: two small dependencies (Starlette needs only anyio;
no pydantic, no front-end bundle), and full control of what matters here — the canvas the mask is painted on, and
the security rules of a server that runs jobs on the user's machine (host check, token, session cookie, upload
limits, fixed download names; see dip_ui/security.py). It is tested end to end with Starlette's TestClient and in
headless Chromium through Selenium. Gradio would bring hundreds of megabytes of dependencies, a front end fetched
or bundled at its own pace, and an image editor that is hard to drive from a test; FastAPI's validation layer
would add pydantic for a dozen fields that `dip_ui.forms` checks against fixed lists anyway.

Routes (every /api route but /api/session needs the session cookie; a run or upload of another session is
answered 404, as one that does not exist; every request that changes something must come from the page's own
origin, by its Origin or Sec-Fetch-Site header; JSON bodies are `application/json`):

    GET    /                              the page (no cookie: a plain load makes no session)
    POST   /api/session                   the page's session: made (the cookie set; the token, when the server
                                          has one, exchanged for it) or kept alive; -> what is kept, how long
    GET    /static/{app.js,app.css,favicon.svg}
    GET    /api/info                      tasks, backends, devices, presets, networks, limits
    POST   /api/uploads?kind=&name=       the file's bytes as the body -> {id, width, height, channels, mode}
    GET    /api/uploads/{id}/preview.png  the upload as an 8-bit PNG the browser can show (and paint on)
                                          (an upload's body is streamed to disk, under a cap on the bytes being
                                          received at once; it is decoded once to check it, then again only
                                          when a run or a timing needs it, one decoding at a time)
    GET    /api/estimate?image=&task=&backend=&device=&preset=&net=&kernel=&peak=  ms per step, once ready
    GET    /api/runs                      this session's runs
    POST   /api/runs                      JSON {image, mask | mask_color, reference, task, backend, device, preset,
                                          net, iters, kernel, peak, seed} -> the run, queued on its device
                                          (kernel, mask, mask_color, peak: only for the tasks that take them)
    GET    /api/runs/{id}?since=N         state, queue position, progress, ETA, the curves' points from N
    POST   /api/runs/{id}/stop            stop it (a queued run never starts; a running one keeps its best result)
    DELETE /api/runs/{id}                 stop it and remove its folder
    GET    /api/runs/{id}/{result.png,mask.png,report.json}[?download=1]
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image as PILImage
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dip_core.backend import available_backends
from dip_core.errors import UserError, messages
from dip_core.model.config import NETS
from dip_core.problem.image import Image
from dip_core.problem.presets import DEFAULT_PRESET, PRESETS, preset_for
from dip_core.problem.registry import SPECS, Task, describe
from dip_core.run.estimate import measure as time_steps
from dip_core.run.memory import MemoryError_
from dip_core.run.options import option_table
from dip_core.run.prepare import FEW_ITERS_SHARE, default_stop, prepare
from dip_ui.estimates import Estimates
from dip_ui.forms import DEFAULT_KERNEL, MASKED_TASKS, BadRequest, RunRequest, parse_json, parse_run
from dip_ui.runs import MemoryBusy, QueueFull, Run, RunManager, device_queue
from dip_ui.security import (
    LOOPBACK_NAMES,
    Limits,
    UploadRefused,
    decode_image,
    listens_everywhere,
    new_id,
    safe_stem,
    same_secret,
    too_large,
)
from dip_ui.sessions import COOKIE, Session, Sessions, Upload

log = logging.getLogger("dip_ui")

TOKEN_HEADER = "x-dip-token"
MAX_JSON_BYTES = 64 * 1024
UPLOAD_KINDS = ("image", "mask", "reference")
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the token is in the page's URL
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class UiConfig:
    """How the server runs: where it listens, the token it requires (None: none) and its limits."""

    host: str = "127.0.0.1"
    token: str | None = None
    port: int | None = None  # where it listens (named in the cookie); None: not known (tests)
    limits: Limits = field(default_factory=Limits)

    def allowed_hosts(self) -> frozenset[str] | None:
        """Host header names accepted (against DNS rebinding); None: any (the server listens everywhere)."""
        if listens_everywhere(self.host):
            return None
        return LOOPBACK_NAMES | {self.host.strip("[]").lower()}


class Inflight:
    """The bytes of request bodies being received at once, for the whole server, with a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._taken = 0

    def take(self, n: int) -> bool:
        """Reserve n bytes; False (nothing reserved) when the cap would be passed."""
        with self._lock:
            if self._taken + n > self.cap:
                return False
            self._taken += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self._taken -= n


class Refused(Exception):
    """A request answered with an error status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def host_name(value: str) -> str:
    """The name of a Host header: `[::1]:8765` -> `::1`, `localhost:80` -> `localhost`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: refuse an unknown Host header (DNS rebinding), add the security headers to every answer."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hosts is not None and host_name(Headers(scope=scope).get("host", "")) not in self.hosts:
            await PlainTextResponse("unknown host", 400)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def preview_png(image: Image) -> bytes:
    """An 8-bit RGB(A) PNG of an image, for the browser (which reads neither TIFF nor every PNG mode the same)."""
    u8 = np.round(np.clip(image.pixels, 0, 1) * 255).astype(np.uint8)
    if u8.shape[2] == 1:
        u8 = np.repeat(u8, 3, axis=2)
    if image.alpha is not None:
        alpha = image.alpha if image.alpha.dtype == np.uint8 else np.round(image.alpha / 257).astype(np.uint8)
        u8 = np.dstack([u8, alpha])
    buffer = io.BytesIO()
    PILImage.fromarray(u8).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class App:
    """The routes, and the state they share: sessions, runs, estimates."""

    def __init__(self, config: UiConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.runs = RunManager(config.limits)
        self.inflight = Inflight(config.limits.uploads_at_once * config.limits.max_bytes)
        self.decoding = threading.Semaphore(1)  # one image decoded at a time: memory is held by one at most
        self.estimates = Estimates()
        # One cookie name per port and per server: cookies ignore ports, so a browser sends every server on this
        # machine the cookies of all; each server reads only its own, whose value no other one made.
        port = f"_{config.port}" if config.port is not None else ""
        self.cookie = f"{COOKIE}{port}_{secrets.token_hex(4)}"
        self.sessions = Sessions(
            config.limits, holds=lambda s: bool(self.runs.of_session(s.id)), ended=lambda s: self.runs.end_session(s.id)
        )

    def close(self) -> None:
        """Stop every run and remove every folder (the server stops)."""
        self.estimates.close()
        self.sessions.close()
        self.runs.close()

    # --- checks every API request goes through ---

    def _token_ok(self, request: Request) -> bool:
        """The token, where the server has one, sent with this request (the page sends it once, for its session)."""
        token = self.config.token
        if token is None:
            return True
        return same_secret(request.headers.get(TOKEN_HEADER) or request.query_params.get("token"), token)

    def _same_origin(self, request: Request) -> None:
        """A request that changes something must say it comes from the page itself: its Origin is this server's,
        or (a browser that sends no Origin) its Sec-Fetch-Site is same-origin. A form or image of another site,
        or of another server on this machine (cookies ignore ports), says neither."""
        origin = request.headers.get("origin")
        if origin is not None:
            if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
                raise Refused(403, "requests from another origin are refused")
        elif request.headers.get("sec-fetch-site") != "same-origin":
            raise Refused(403, "requests that do not say they come from this page (Origin) are refused")

    def _session(self, request: Request) -> Session:
        if request.method not in ("GET", "HEAD"):
            self._same_origin(request)
        self.sessions.sweep()
        session = self.sessions.get(request.cookies.get(self.cookie))
        if session is None:
            if not self._token_ok(request):
                raise Refused(403, "this server needs its token: open the URL `dip ui` printed (with ?token=...)")
            raise Refused(403, "no session: load the page first (cookies must be on)")
        return session

    def api(self, handler: Callable[[Request, Session], Awaitable[Response]]) -> Handler:
        """A route of the API: token and session checked, user errors as JSON with their status."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, self._session(request))
            except Refused as exc:
                return error(exc.status, str(exc))
            except UploadRefused as exc:
                return error(exc.status, str(exc))
            except ClientDisconnect:  # the client went away mid-request (an aborted upload): nobody to tell
                return error(400, "the client went away")
            except QueueFull as exc:
                return error(429, str(exc))
            except MemoryBusy as exc:
                return error(503, str(exc))
            except MemoryError_ as exc:  # the page's choices, not the command line's
                return error(400, exc.page)
            except UserError as exc:
                return error(400, "; ".join(messages(exc)))

        return endpoint

    def _run(self, request: Request, session: Session) -> Run:
        run = self.runs.get(session.id, request.path_params["run_id"])
        if run is None:
            raise Refused(404, "no such run")
        return run

    def _upload(self, session: Session, upload_id: str | None, what: str) -> Upload:
        upload = self.sessions.upload(session, upload_id)
        if upload is None:
            raise Refused(404, f"no such {what}: upload it again")
        return upload

    async def _json(self, request: Request) -> Any:
        """The request's JSON body: no more than MAX_JSON_BYTES, nested no deeper than MAX_JSON_DEPTH."""
        length = request.headers.get("content-length", "")
        over = UploadRefused(f"the request is over {MAX_JSON_BYTES // 1024} kB, the most a run's settings take", 413)
        if length.isdigit() and int(length) > MAX_JSON_BYTES:
            raise over
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_JSON_BYTES:
                raise over
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    async def _receive(self, request: Request) -> Path:
        """An upload's body, streamed to a file of the server's: no more than max_bytes, and refused (503) while
        other uploads being received hold the server's cap."""
        limit = self.limits.max_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large(int(length), self.limits)
        reserved = int(length) if length.isdigit() else limit
        if not self.inflight.take(reserved):
            raise UploadRefused("the server is receiving too many uploads at once: try again in a moment", 503)
        path = self.sessions.folder / f"{new_id()}.upload"
        try:
            total = 0
            with path.open("wb") as fh:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > min(limit, reserved):
                        raise too_large(None if not length.isdigit() else total, self.limits)
                    fh.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            self.inflight.give(reserved)
        return path

    def _decode(self, upload: Upload) -> Image:
        """An upload decoded, one decoding at a time."""
        with self.decoding:
            return upload.image(self.limits)

    def _inspect(self, path: Path) -> tuple[int, int, int, str, Path]:
        """Decode a new upload once (its checks), write its preview beside it, and keep nothing decoded: its
        height, width, channels, mode and the preview's path."""
        with self.decoding:
            image = decode_image(path, self.limits)
            preview = path.with_suffix(".preview.png")
            try:
                preview.write_bytes(preview_png(image))
            except OSError as exc:
                preview.unlink(missing_ok=True)
                raise UploadRefused(f"the server cannot store the upload: {exc.strerror or exc}", 507) from None
        return image.height, image.width, image.channels, image.source_mode, preview

    # --- the page ---

    async def index(self, request: Request) -> Response:
        """The page only: it asks for its session itself (POST /api/session), so that loading it from anywhere
        (an <img> on another site) makes nothing."""
        if not self._token_ok(request) and self.sessions.get(request.cookies.get(self.cookie)) is None:
            return PlainTextResponse("this server needs its token: open the URL `dip ui` printed", 403)
        page = (resources.files("dip_ui") / "static" / "index.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8")

    async def session(self, request: Request) -> Response:
        """The page's session: this cookie's, kept alive, or a new one (the token, if any, exchanged for it)."""
        try:
            self._same_origin(request)
            self._json_type(request)
            session = self.sessions.get(request.cookies.get(self.cookie))
            fresh = session is None
            if fresh:
                if not self._token_ok(request):
                    raise Refused(403, "this server needs its token: open the URL `dip ui` printed (with ?token=...)")
                session = self.sessions.new()
        except Refused as exc:
            return error(exc.status, str(exc))
        except UploadRefused as exc:
            return error(exc.status, str(exc))
        response = JSONResponse({"kept": self.retention(), "ping_s": self.ping_s()})
        if fresh:
            response.set_cookie(self.cookie, session.id, httponly=True, samesite="strict", path="/")
        return response

    def ping_s(self) -> float:
        """How often an open page says it is still there: well within the idle time."""
        return max(1.0, min(300.0, self.limits.session_idle_s / 4))

    def retention(self) -> str:
        """What the server keeps, and how long, in the page's words."""
        idle = self.limits.session_idle_s
        idle_text = f"{idle / 60:g} minutes" if idle >= 60 else f"{idle:g} s"
        return (
            "Your results stay on this computer until you delete them or `dip ui` stops, "
            f"{self.limits.kept_per_session} runs at most: past that, starting a run deletes your oldest finished "
            f"one. If you start no run, the images you uploaded are forgotten {idle_text} after this page is closed."
        )

    @staticmethod
    def _json_type(request: Request) -> None:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise Refused(415, "send it as JSON (Content-Type: application/json)")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        data = (resources.files("dip_ui") / "static" / name).read_bytes()
        return Response(data, media_type=STATIC[name])

    # --- the API ---

    async def info(self, request: Request, session: Session) -> Response:
        backends = available_backends()
        presets = {
            name: {"task": p.task.value, "iters": p.iters, "net": p.net, "factor": p.factor}
            for name, p in PRESETS.items()
        }
        return JSONResponse(
            {
                "tasks": [t.value for t in Task],
                "task_specs": {t.value: describe(t) for t in Task},  # what the page shows per task, from the registry
                "masked_tasks": sorted(t.value for t in MASKED_TASKS),
                "auto_stop_tasks": sorted(s.task.value for s in SPECS if s.auto_stop),
                "backends": backends,
                "default_backend": "mlx" if "mlx" in backends else (backends[0] if backends else None),
                "devices": ["auto", "cpu", "gpu"],
                "presets": presets,
                "default_presets": {t.value: name for t, name in DEFAULT_PRESET.items()},
                "nets": list(NETS),
                "default_kernel": DEFAULT_KERNEL,
                "options": option_table(),  # each run option's help and bounds, as the CLI shows them
                "few_iters_share": FEW_ITERS_SHARE,  # fewer iterations than this share of the preset's: warned
                "limits": {
                    "max_bytes": self.limits.max_bytes,
                    "max_pixels": self.limits.max_pixels,
                    "max_iters": self.limits.max_iters,
                    "kept_runs": self.limits.kept_per_session,
                },
            }
        )

    async def upload(self, request: Request, session: Session) -> Response:
        kind = request.query_params.get("kind", "image")
        if kind not in UPLOAD_KINDS:
            raise BadRequest(f"unknown kind {kind!r}; one of {', '.join(UPLOAD_KINDS)}")
        path = await self._receive(request)
        try:
            height, width, channels, mode, preview = await run_in_threadpool(self._inspect, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        name = safe_stem(request.query_params.get("name"))
        upload = Upload(new_id(), name, path, preview, width, height, channels, mode)
        self.sessions.add_upload(session, upload)  # refused: its files are removed
        return JSONResponse(
            {"id": upload.id, "kind": kind, "width": width, "height": height, "channels": channels, "mode": mode,
             "name": upload.name}
        )  # fmt: skip

    async def preview(self, request: Request, session: Session) -> Response:
        upload = self._upload(session, request.path_params["upload_id"], "upload")
        return FileResponse(upload.preview, media_type="image/png")

    async def estimate(self, request: Request, session: Session) -> Response:
        query = dict(request.query_params)
        masked = query.get("task") in {t.value for t in MASKED_TASKS}
        query.update({"mask": "-" if masked else None, "mask_color": None, "reference": None, "iters": None})
        wanted = parse_run(query, self.limits.max_iters)
        upload = self._upload(session, wanted.image, "image")
        preset = preset_for(wanted.task, wanted.preset)
        key = estimate_key(wanted, upload)

        def measure() -> tuple[float, str, bool]:
            image = self._decode(upload)
            mask = Image(np.ones((image.height, image.width, 1), np.float32), "L") if masked else None
            options = wanted.options()
            prepared = prepare(wanted.task, image, options, mask=mask)
            device = device_queue(prepared)
            busy = self.runs.device_busy(device)
            ms = time_steps(prepared).ms_per_iter
            return ms, prepared.backend.device, busy or self.runs.device_busy(device)

        timing = self.estimates.get(key, measure, self._maybe_busy(wanted.device.value))
        auto = default_stop(wanted.task, None).value == "auto"
        return JSONResponse({**timing.to_json(), "iters": preset.iters, "auto_stop": auto, "preset": key[5]})

    async def list_runs(self, request: Request, session: Session) -> Response:
        runs = sorted(self.runs.of_session(session.id), key=lambda r: r.created)
        return JSONResponse({"runs": [self._run_json(r, None) for r in runs]})

    async def create_run(self, request: Request, session: Session) -> Response:
        self._json_type(request)
        body = await self._json(request)
        wanted = parse_run(body, self.limits.max_iters)
        image = self._upload(session, wanted.image, "image")
        uploads = {"image": image}
        if wanted.mask is not None:
            uploads["mask"] = self._upload(session, wanted.mask, "mask")
        if wanted.reference is not None:
            uploads["reference"] = self._upload(session, wanted.reference, "reference")
        inputs = {what: await run_in_threadpool(self._decode, u) for what, u in uploads.items()}
        known = self.estimates.ms_per_iter(estimate_key(wanted, image))  # if the page had it timed
        run = await run_in_threadpool(self.runs.submit, session.id, wanted, inputs, image.name, known)
        forgotten = self.runs.keep_at_most(session.id, self.limits.kept_per_session)  # said to the page
        return JSONResponse({**self._run_json(run, 0), "forgotten": forgotten})

    def _maybe_busy(self, device: str) -> bool:
        """Whether a run is going on the device asked for (auto: on either)."""
        return any(self.runs.device_busy(d) for d in ("cpu", "gpu") if device in (d, "auto"))

    def _run_json(self, run: Run, since: int | None) -> dict[str, Any]:
        data = run.to_json(self.runs.position(run), since if since is not None else 1 << 62)
        if since is None:
            data.pop("points")
        return data

    async def get_run(self, request: Request, session: Session) -> Response:
        run = self._run(request, session)
        since = request.query_params.get("since", "0")
        return JSONResponse(self._run_json(run, int(since) if since.isdigit() else 0))

    async def stop_run(self, request: Request, session: Session) -> Response:
        run = self._run(request, session)
        self.runs.stop(run)
        return JSONResponse(self._run_json(run, None))

    async def delete_run(self, request: Request, session: Session) -> Response:
        self.runs.discard(self._run(request, session))
        return JSONResponse({"deleted": True})

    async def run_file(self, request: Request, session: Session) -> Response:
        run = self._run(request, session)
        name = request.path_params["file"]
        paths = {"result.png": run.result_path, "mask.png": run.mask_path, "report.json": run.report_path}
        path = paths.get(name)
        if path is None or not path.is_file():
            raise Refused(404, f"no {name} (yet)")
        media = "application/json" if name.endswith(".json") else "image/png"
        if request.query_params.get("download"):
            task = run.request.task.value
            filename = {"result.png": f"{run.name}.{task}.png", "mask.png": f"{run.name}.mask.png",
                        "report.json": f"{run.name}.{task}.json"}[name]  # fmt: skip
            return FileResponse(path, media_type=media, filename=filename)
        return FileResponse(path, media_type=media)


def estimate_key(wanted: RunRequest, image: Image | Upload) -> tuple[Any, ...]:
    """What a step's time depends on: backend, device, the image's size, the preset and the network."""
    preset = wanted.preset or DEFAULT_PRESET[wanted.task]
    net = wanted.net or PRESETS[preset].net
    return (wanted.backend.value, wanted.device.value, image.height, image.width, image.channels, preset, net)


def create_app(config: UiConfig | None = None) -> Starlette:
    """The Starlette app of `dip ui`; stopping it (its lifespan's end) stops every run and removes every folder."""
    config = config or UiConfig()
    ui = App(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(ui.close)

    routes = [
        Route("/", ui.index, methods=["GET"]),
        Route("/static/{name}", ui.static, methods=["GET"]),
        Route("/api/session", ui.session, methods=["POST"]),
        Route("/api/info", ui.api(ui.info), methods=["GET"]),
        Route("/api/uploads", ui.api(ui.upload), methods=["POST"]),
        Route("/api/uploads/{upload_id}/preview.png", ui.api(ui.preview), methods=["GET"]),
        Route("/api/estimate", ui.api(ui.estimate), methods=["GET"]),
        Route("/api/runs", ui.api(ui.list_runs), methods=["GET"]),
        Route("/api/runs", ui.api(ui.create_run), methods=["POST"]),
        Route("/api/runs/{run_id}", ui.api(ui.get_run), methods=["GET"]),
        Route("/api/runs/{run_id}", ui.api(ui.delete_run), methods=["DELETE"]),
        Route("/api/runs/{run_id}/stop", ui.api(ui.stop_run), methods=["POST"]),
        Route("/api/runs/{run_id}/{file}", ui.api(ui.run_file), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Guard, hosts=config.allowed_hosts())
    app.state.ui = ui
    return app
