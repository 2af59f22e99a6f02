"""`dip ui`: restore images in the browser (the optional `ui` extra: Starlette and uvicorn, imported only here)."""

from __future__ import annotations

import importlib.util
import threading
import time
import webbrowser
from typing import Annotated

import typer

from dip_cli.app import UsageError, err, out, user_errors

DEFAULT_PORT = 8765


@user_errors
def ui(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")] = DEFAULT_PORT,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on. Anything but this machine's loopback requires a token in the URL."),
    ] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL; do not open a browser.")] = False,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest uploaded file, in MB.")] = 20.0,
    max_megapixels: Annotated[float, typer.Option(min=0.000001, help="Largest uploaded image, in megapixels.")] = 16.0,
) -> None:
    """Restore an image in the browser: paint the mask, watch the fit, stop it, download the result."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f'`dip ui` needs {" and ".join(missing)}: pip install -e ".[ui]"')
    from dip_ui.security import Limits, is_loopback, new_token
    from dip_ui.serve import bind, make_server, url_of
    from dip_ui.server import UiConfig

    token = None
    if not is_loopback(host):
        token = new_token()
        err().print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach it and has the URL's token can run jobs "
            "on this machine and see their images; the token is required on every request",
            highlight=False,
            soft_wrap=True,
        )
    limits = Limits(max_bytes=round(max_upload_mb * 1e6), max_pixels=round(max_megapixels * 1e6))
    sock = bind(host, port)
    config = UiConfig(host=host, token=token, limits=limits, port=sock.getsockname()[1])
    url = url_of(host, sock.getsockname()[1], token)
    server = make_server(config, log_level="warning")
    out().print(f"dip ui: {url}  (Ctrl-C stops it; every run's files go with it)", highlight=False, soft_wrap=True)
    if not no_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down on Ctrl-C, then passes the signal on
        pass
    finally:
        server.config.app.state.ui.close()  # again, in case a second Ctrl-C cut the shutdown short
        sock.close()
    out().print("dip ui: stopped", highlight=False)


def _open_when_started(server: object, url: str, wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while not getattr(server, "started", False):
        if time.monotonic() > deadline or getattr(server, "should_exit", False):
            return
        time.sleep(0.05)
    webbrowser.open(url)
