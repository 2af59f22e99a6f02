"""`dip ui`'s HTTP API end to end, through Starlette's TestClient: upload, mask, estimate, runs on torch's CPU with
the tiny network (a few iterations of a 37x29 image), stop, queue, downloads; and the security rules (limits,
non-images, sessions, token, host, paths). Skipped, with the reason, without the `ui` extra."""

from __future__ import annotations

import io
import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

try:
    import httpx  # noqa: F401  (Starlette's TestClient)
    import starlette  # noqa: F401
except ImportError as exc:
    pytest.skip(f"the ui extra is not installed ({exc.name}): pip install -e '.[ui]'", allow_module_level=True)

with warnings.catch_warnings():  # Starlette 1.x prefers the httpx2 fork; httpx works on every version we allow
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from cli import app as cli_app
from dip_core.backend import available_backends
from dip_ui.security import Limits
from dip_ui.server import UiConfig, create_app

pytestmark = pytest.mark.skipif("torch" not in available_backends(), reason="the runs here use torch's CPU")

H, W = 29, 37  # odd sides: padded for the network and cropped back
BASE = "http://127.0.0.1"
RUN = {"task": "inpaint", "backend": "torch", "device": "cpu", "net": "tiny"}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def read_png(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im)


@pytest.fixture(scope="module")
def pictures() -> tuple[bytes, bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.full((H, W), 255, np.uint8)
    mask[8:16, 10:24] = 0  # the painted hole
    return png(image), png(mask), image, mask


def open_client(config: UiConfig | None = None) -> TestClient:
    client = TestClient(create_app(config or UiConfig()), base_url=BASE)
    return client


def start_session(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "dip" in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()


def upload(client: TestClient, data: bytes, kind: str = "image", name: str = "photo.png") -> dict:
    answer = client.post(f"/api/uploads?kind={kind}&name={name}", content=data)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait(client: TestClient, run_id: str, until: set[str], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"/api/runs/{run_id}").json()
        if data["state"] in until:
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


@pytest.fixture(scope="module")
def served(pictures):
    """One server for the module's runs, with a session that uploaded the image and its mask."""
    with open_client() as client:
        start_session(client)
        image = upload(client, pictures[0])
        mask = upload(client, pictures[1], "mask", "photo_mask.png")
        yield client, image["id"], mask["id"]
    assert not client.app.state.ui.runs.root.exists()  # the server stopped: every run's folder is gone


def test_upload_answers_the_size_and_a_preview(served):
    client, image_id, _ = served
    listed = client.post("/api/uploads?kind=image&name=../../etc/odd%20name.png", content=png(np.zeros((5, 7), "u1")))
    assert listed.json()["width"] == 7 and listed.json()["height"] == 5
    assert listed.json()["name"] == "odd_name"  # the client's name is only ever a safe stem for downloads
    preview = client.get(f"/api/uploads/{image_id}/preview.png")
    assert preview.status_code == 200 and read_png(preview.content).shape == (H, W, 3)


def test_estimate_then_a_run_to_the_end(served, pictures):
    client, image_id, mask_id = served
    query = {"image": image_id, **RUN}
    timing = client.get("/api/estimate", params=query).json()
    deadline = time.monotonic() + 120
    while timing["state"] == "timing" and time.monotonic() < deadline:
        time.sleep(0.1)
        timing = client.get("/api/estimate", params=query).json()
    assert timing["state"] == "ready", timing
    assert timing["ms_per_iter"] > 0 and timing["iters"] == 6001 and timing["device"] == "cpu"
    assert client.get("/api/estimate", params=query).json() == timing  # cached: timed once

    answer = client.post("/api/runs", json={**RUN, "image": image_id, "mask": mask_id, "iters": 12})
    assert answer.status_code == 200, answer.text
    run = wait(client, answer.json()["id"], {"done", "failed", "stopped"})
    assert run["state"] == "done", run["message"]
    full = client.get(f"/api/runs/{run['id']}").json()
    assert [p[0] for p in full["points"]] == list(range(1, 13))  # every step's loss and PSNR, for the curves
    assert client.get(f"/api/runs/{run['id']}?since=10").json()["points"] == full["points"][10:]

    result = client.get(f"/api/runs/{run['id']}/result.png?download=1")
    assert result.status_code == 200 and 'filename="photo.inpaint.png"' in result.headers["content-disposition"]
    pixels = read_png(result.content)
    image, mask = pictures[2], pictures[3]
    assert pixels.shape == (H, W, 3)
    assert np.array_equal(pixels[mask == 255], image[mask == 255])  # the known pixels are pasted back
    assert np.array_equal(read_png(client.get(f"/api/runs/{run['id']}/mask.png").content), mask)
    report = client.get(f"/api/runs/{run['id']}/report.json").json()
    assert report["task"] == "inpaint" and report["iters"] == 12 and report["finished"] is True
    assert report["net"]["channels_down"] == [8, 8] and report["ui"]["request"]["net"] == "tiny"
    assert len(report["loss_curve"]) == 12


def test_stop_keeps_the_best_result_and_a_queued_run_never_starts(served):
    client, image_id, mask_id = served
    body = {**RUN, "image": image_id, "mask": mask_id, "iters": 100_000}
    first = client.post("/api/runs", json=body).json()
    second = client.post("/api/runs", json={**body, "iters": 5}).json()
    assert second["state"] == "queued" and second["position"] >= 1  # one run at a time on the CPU
    deadline = time.monotonic() + 120
    while client.get(f"/api/runs/{first['id']}").json()["iter"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get(f"/api/runs/{first['id']}").json()["eta_s"] > 0
    assert client.post(f"/api/runs/{second['id']}/stop").json()["state"] == "cancelled"
    client.post(f"/api/runs/{first['id']}/stop")
    run = wait(client, first["id"], {"stopped", "done", "failed"})
    assert run["state"] == "stopped", run["message"]
    assert 5 <= run["iter"] < 100_000 and "best result so far" in run["message"]
    assert read_png(client.get(f"/api/runs/{first['id']}/result.png").content).shape == (H, W, 3)
    report = client.get(f"/api/runs/{first['id']}/report.json").json()
    assert report["interrupted"] is True and report["finished"] is False
    assert client.get(f"/api/runs/{second['id']}/result.png").status_code == 404  # it never ran
    listed = {r["id"]: r["state"] for r in client.get("/api/runs").json()["runs"]}
    assert listed[first["id"]] == "stopped" and listed[second["id"]] == "cancelled"
    assert client.delete(f"/api/runs/{second['id']}").status_code == 200
    assert client.get(f"/api/runs/{second['id']}").status_code == 404


def test_another_session_sees_nothing(served):
    client, image_id, mask_id = served
    run_id = client.post("/api/runs", json={**RUN, "image": image_id, "mask": mask_id, "iters": 3}).json()["id"]
    wait(client, run_id, {"done", "failed"})
    other = TestClient(client.app, base_url=BASE)  # its own cookie jar: another browser
    start_session(other)
    cookie = client.app.state.ui.cookie
    assert other.cookies.get(cookie) != client.cookies.get(cookie)
    for path in ("", "/result.png", "/mask.png", "/report.json"):
        answer = other.get(f"/api/runs/{run_id}{path}")
        assert answer.status_code == 404 and answer.json() == {"error": "no such run"}
    assert other.post(f"/api/runs/{run_id}/stop").status_code == 404
    assert other.delete(f"/api/runs/{run_id}").status_code == 404
    assert other.get("/api/runs").json() == {"runs": []}
    assert other.get(f"/api/uploads/{image_id}/preview.png").status_code == 404
    answer = other.post("/api/runs", json={**RUN, "image": image_id, "mask": mask_id, "iters": 3})
    assert answer.status_code == 404  # nor can it run on this session's upload
    assert client.get(f"/api/runs/{run_id}").status_code == 200  # still there for its owner
    nobody = TestClient(client.app, base_url=BASE)  # no cookie at all
    assert nobody.get("/api/runs").status_code == 403


def test_bad_choices_are_refused_with_the_reason(served):
    client, image_id, mask_id = served
    base = {**RUN, "image": image_id, "mask": mask_id, "iters": 3}
    cases = [
        ({"net": "/etc/passwd.json"}, "unknown net"),
        ({"task": "deblur", "mask": None, "kernel": "/tmp/kernel.png"}, "unknown kernel"),
        ({"task": "deblur", "mask": None, "kernel": "gaussian:1e9"}, "unknown kernel"),
        ({"task": "deblur"}, "deblur does not use mask (only inpaint and restore take it)"),
        ({"task": "denoise", "mask": None, "kernel": "gaussian:2"}, "denoise does not use kernel (only deblur"),
        ({"mask": None, "task": "sr", "mask_color": "#ff0000"}, "sr does not use mask_color"),
        ({"iters": 10**9}, "iters must be between"),
        ({"preset": "denoise"}, "unknown preset"),
        ({"mask": None}, "needs a mask"),
        ({"image": "no-such-upload"}, "no such image"),
    ]
    for change, message in cases:
        answer = client.post("/api/runs", json={**base, **change})
        assert answer.status_code in (400, 404), (change, answer.text)
        assert message in answer.json()["error"], (change, answer.json())
    wrong_size = upload(client, png(np.full((10, 10), 255, np.uint8)), "mask")
    answer = client.post("/api/runs", json={**base, "mask": wrong_size["id"]})
    assert answer.status_code == 400 and "the mask is 10x10 but the image is 37x29" in answer.json()["error"]
    assert client.post("/api/runs", content=json.dumps(base)).status_code == 415  # not sent as JSON
    assert client.get("/api/runs", headers={"host": "attacker.example"}).status_code == 400  # DNS rebinding
    other_port = client.post("/api/runs", json=base, headers={"origin": "http://127.0.0.1:9999"})
    assert other_port.status_code == 403 and "another origin" in other_port.json()["error"]
    assert client.get("/static/../server.py").status_code == 404
    assert client.get("/api/runs/x/../../../etc/passwd").status_code == 404


def test_an_idle_session_ends_and_its_runs_folders_go(pictures):
    with open_client(UiConfig(limits=Limits(session_idle_s=0.5))) as client:
        start_session(client)
        image, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
        run_id = client.post("/api/runs", json={**RUN, "image": image["id"], "mask": mask["id"], "iters": 2}).json()[
            "id"
        ]
        wait(client, run_id, {"done"})
        (folder,) = client.app.state.ui.runs.root.iterdir()  # the server's only run
        assert (folder / "result.png").is_file()
        time.sleep(0.6)
        other = TestClient(client.app, base_url=BASE)
        start_session(other)  # any request sweeps the sessions
        assert not folder.exists()
        assert client.get(f"/api/runs/{run_id}").status_code == 403  # that session is over


def test_uploads_over_the_limits_or_not_images_are_refused():
    limits = Limits(max_bytes=4000, max_pixels=1000)
    with open_client(UiConfig(limits=limits)) as client:
        start_session(client)
        rng = np.random.default_rng(0)
        cases = [
            (png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)), 413, "the upload limit is 0.0 MB"),
            (png(np.zeros((29, 37), np.uint8)), 413, "37x29 = 0.0 Mpx; the limit is 0.001 Mpx"),
            (b"just some text, named photo.png", 400, "not an image"),
            (png(rng.integers(0, 256, (20, 20), dtype=np.uint8))[:200], 400, "damaged or truncated"),
            (b"", 400, "empty"),
            (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 400, "not an image"),  # no EPS plug-in
        ]
        for data, status, message in cases:
            answer = client.post("/api/uploads?kind=image&name=photo.png", content=data,
                                 headers={"content-type": "image/png"})  # fmt: skip
            assert answer.status_code == status, (message, answer.text)
            assert message in answer.json()["error"], answer.json()


def test_a_token_is_required_when_configured():
    with open_client(UiConfig(token="s3cret-token")) as client:
        assert client.get("/").status_code == 403
        assert client.get("/?token=wrong").status_code == 403
        page = client.get("/?token=s3cret-token")
        assert page.status_code == 200 and client.app.state.ui.cookie in page.headers["set-cookie"]
        assert client.get("/api/info").status_code == 403  # the cookie alone is not enough
        assert client.get("/api/info", headers={"x-dip-token": "s3cret-tokeX"}).status_code == 403
        assert client.get("/api/info", headers={"x-dip-token": "s3cret-token"}).status_code == 200
        assert client.get("/api/info?token=s3cret-token").status_code == 200  # links and <img> carry it so


def test_security_headers_on_every_answer(served):
    client, _, _ = served
    for path in ("/", "/static/app.js", "/api/info"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"


def test_dip_ui_without_the_extra_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    result = CliRunner().invoke(cli_app, ["ui", "--no-browser"])
    assert result.exit_code == 2
    assert 'pip install -e ".[ui]"' in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("check", "value"), [("iters", float("inf")), ("kernel", 5), ("kernel", ["gaussian:2"])])
def test_form_values_of_the_wrong_kind_are_bad_requests(check, value):
    """A value of the wrong type is a 400 with a message, not a server error."""
    from dip_ui.forms import BadRequest, _integer, check_kernel

    with pytest.raises(BadRequest):
        _integer({"iters": value}, "iters", 1, 10) if check == "iters" else check_kernel(value)
