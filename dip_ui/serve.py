"""Running the app with uvicorn: in the foreground for `dip ui`, or in a thread (`Served`) for tests and scripts.

The socket is bound here, before uvicorn starts, so that a port in use is one clear error and `--port 0` gets a
free port whose number goes into the printed URL.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from types import TracebackType

import uvicorn

from dip_core.errors import UserError
from dip_ui.security import listens_everywhere
from dip_ui.server import UiConfig, create_app

START_S = 30.0  # how long `Served` waits for the server to accept connections


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); a port in use or a bad host is a UserError."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = ": choose another --port" if exc.errno in (98, 48, 10048) else ""
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int, token: str | None) -> str:
    """The page's URL (the token in it when the server has one)."""
    name = host.strip("[]")
    if listens_everywhere(host):
        name = socket.gethostname()
    shown = f"[{name}]" if ":" in name else name
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def make_server(config: UiConfig, log_level: str = "warning") -> uvicorn.Server:
    app = create_app(config)
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False))


class Served:
    """The app served from a thread on a free port of 127.0.0.1 (tests, scripts): `with Served(config) as url:`."""

    def __init__(self, config: UiConfig | None = None) -> None:
        config = config or UiConfig()
        self.sock = bind(config.host, 0)
        self.port = self.sock.getsockname()[1]
        self.config = replace(config, port=self.port)
        self.server = make_server(self.config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + START_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dip ui server did not start")
            time.sleep(0.05)
        return url_of(self.config.host, self.port, self.config.token)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
