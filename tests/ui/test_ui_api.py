"""`dip ui`'s HTTP API end to end, through Starlette's TestClient: upload, mask, estimate, runs on torch's CPU with
the tiny network (a few iterations of a 37x29 image), stop, queue, downloads; and the security rules (limits,
non-images, sessions, token, host, paths). Skipped, with the reason, without the `ui` extra."""

from __future__ import annotations

import io
import json
import time
import warnings
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.common import runner

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


def browser(app: Any) -> TestClient:
    """A client that sends what a browser's fetch from the page sends: the page's origin."""
    return TestClient(app, base_url=BASE, headers={"origin": BASE})


def open_client(config: UiConfig | None = None) -> TestClient:
    return browser(create_app(config or UiConfig()))


def start_session(client: TestClient) -> None:
    """Load the page, then ask for the session as the page does."""
    page = client.get("/")
    assert page.status_code == 200 and "dip" in page.text
    answer = client.post("/api/session", json={})
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()


def finished_run(client: TestClient, pictures: tuple, iters: int = 2) -> str:
    """Upload the image and mask, run to the end; the run's id."""
    image, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
    answer = client.post("/api/runs", json={**RUN, "image": image["id"], "mask": mask["id"], "iters": iters})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["id"]
    assert wait(client, run_id, {"done", "failed", "stopped"})["state"] == "done"
    return run_id


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
    assert not client.app.state.ui.sessions.folder.exists()  # and every upload's file


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
    other = browser(client.app)  # its own cookie jar: another browser
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
    nobody = browser(client.app)  # no cookie at all
    assert nobody.get("/api/runs").status_code == 403


def test_bad_choices_are_refused_with_the_reason(served):
    client, image_id, mask_id = served
    base = {**RUN, "image": image_id, "mask": mask_id, "iters": 3}
    cases = [
        ({"net": "/etc/passwd.json"}, "unknown net"),
        ({"task": "deblur", "mask": None, "kernel": "/tmp/kernel.png"}, "unknown kernel"),
        ({"task": "deblur", "mask": None, "kernel": "gaussian:1e9"}, "unknown kernel"),
        ({"task": "deblur"}, "deblur does not use mask (only inpaint and restore take it)"),
        ({"task": "denoise", "mask": None, "kernel": "gaussian:2"}, "use kernel (only deblur takes it)"),
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


def test_a_poisson_run_takes_a_peak_and_another_task_refuses_it(served):
    """A photon count at white (`peak`) is a poisson option: its run request carries it into RunOptions (and the
    run's report); on a task that does not take it, it is refused with the tasks that do, as kernel and mask are."""
    from dip_core.problem.registry import taken_by
    from dip_ui.forms import parse_run

    assert parse_run({"task": "poisson", "image": "x", "peak": 40}, 10).options().peak == 40.0
    assert parse_run({"task": "poisson", "image": "x", "peak": "12.5"}, 10).options().peak == 12.5
    assert parse_run({"task": "poisson", "image": "x", "peak": ""}, 10).options().peak is None  # blank: estimated
    client, image_id, _ = served
    body = {**RUN, "task": "poisson", "image": image_id, "iters": 2, "peak": 40}
    answer = client.post("/api/runs", json=body)
    assert answer.status_code == 200, answer.text
    run = wait(client, answer.json()["id"], {"done", "failed", "stopped"})
    assert run["state"] == "done", run["message"]
    assert client.get(f"/api/runs/{run['id']}/report.json").json()["ui"]["request"]["peak"] == 40.0
    takers = " and ".join(sorted(t.value for t in taken_by("peak")))
    refused = client.post("/api/runs", json={**body, "task": "denoise"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == f"denoise does not use peak (only {takers} takes it)"
    for bad in (0, -3, 2e6, "many", True, float("nan")):
        answer = client.post("/api/runs", content=json.dumps({**body, "peak": bad}),
                             headers={"content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 400 and "peak must be" in answer.json()["error"], (bad, answer.text)
    query = {"image": image_id, **RUN, "task": "denoise", "peak": 40}  # the estimate checks it as a run does
    assert client.get("/api/estimate", params=query).status_code == 400


def test_the_page_names_no_task_it_reads_them_all_from_the_registry():
    """The page's script holds no task name: what differs per task (the kernel, mask and peak fields, auto-stop,
    the summary in the picker) comes from /api/info's task_specs, so that a task added to the registry needs no
    change in the page."""
    import re
    from importlib import resources

    from dip_core.problem.registry import Task

    static = resources.files("dip_ui") / "static"
    for name in ("app.js", "index.html"):
        text = (static / name).read_text()
        quoted = [t.value for t in Task if re.search(rf"[\"'`]{t.value}[\"'`]", text)]
        assert quoted == [], f"{name} names tasks: {quoted}"
    script = (static / "app.js").read_text()
    assert "task_specs" in script and "masked_tasks" not in script and "auto_stop_tasks" not in script


def test_an_idle_session_ends_only_when_it_holds_no_result(pictures):
    """Issue 21, 2: a finished result outlives any idle time; a session holding no run ends, with its uploads."""
    with open_client(UiConfig(limits=Limits(session_idle_s=0.5))) as client:
        start_session(client)
        run_id = finished_run(client, pictures)
        (folder,) = client.app.state.ui.runs.root.iterdir()  # the server's only run
        empty = browser(client.app)
        start_session(empty)
        upload(empty, pictures[0])
        time.sleep(0.6)
        start_session(browser(client.app))  # a request of anyone sweeps the sessions
        assert (folder / "result.png").is_file()
        assert client.get(f"/api/runs/{run_id}/result.png").status_code == 200
        assert empty.get("/api/runs").status_code == 403  # that session held nothing, and is over
        client.delete(f"/api/runs/{run_id}")
        assert not folder.exists()


def test_the_page_keeps_its_session_alive_and_says_what_is_kept(served):
    """Issue 21, 2: the page asks for its session again well within the idle time, and shows the rule."""
    client, _, _ = served
    answer = client.post("/api/session", json={})
    assert answer.status_code == 200 and "set-cookie" not in answer.headers  # the same session, kept alive
    assert answer.json()["ping_s"] < Limits().session_idle_s / 2
    assert "until you delete them" in answer.json()["kept"] and "20 runs at most" in answer.json()["kept"]
    script = client.get("/static/app.js").text
    assert "setInterval(() => keepSession()" in script and 'id="kept"' in client.get("/").text


def test_a_flood_of_page_loads_and_sessions_never_ends_a_result(pictures):
    """Issue 21, 1: 300 cookieless page loads (an <img> flood from another site) make no session, and sessions
    asked for past the limit end only sessions that hold nothing."""
    limits = Limits(sessions=3, new_sessions_per_minute=10_000)
    with open_client(UiConfig(limits=limits)) as client:
        start_session(client)
        run_id = finished_run(client, pictures)
        ui = client.app.state.ui
        flood = TestClient(client.app, base_url=BASE)  # no cookie jar kept between the requests below
        for _ in range(300):
            flood.cookies.clear()
            assert flood.get("/").status_code == 200
        assert len(ui.sessions._sessions) == 1
        codes = set()
        for _ in range(20):
            page = browser(client.app)
            codes.add(page.post("/api/session", json={}).status_code)
        assert codes == {200}  # the empty ones made room for each other
        assert client.get(f"/api/runs/{run_id}/result.png").status_code == 200
        holders = [browser(client.app) for _ in range(2)]
        for other in holders:
            start_session(other)
            upload(other, pictures[0])
        refused = browser(client.app).post("/api/session", json={})
        assert refused.status_code == 503 and "holding results or uploads" in refused.json()["error"]
        assert client.get(f"/api/runs/{run_id}/result.png").status_code == 200


def test_new_sessions_are_bounded_per_minute():
    with open_client(UiConfig(limits=Limits(new_sessions_per_minute=3))) as client:
        codes = [browser(client.app).post("/api/session", json={}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]


def test_a_finished_result_survives_1000_cookieless_requests_on_loopback(pictures):
    """Issue 21, 1: the bounded flood, on a real server on 127.0.0.1: 1,000 cookieless requests, page loads and
    session requests mixed, and the finished result is still there."""
    import http.client
    from urllib.parse import urlsplit

    from dip_ui.serve import Served

    with Served(UiConfig(limits=Limits(sessions=8, new_sessions_per_minute=50))) as url:
        port = urlsplit(url).port
        owner = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"origin": f"http://127.0.0.1:{port}", "host": f"127.0.0.1:{port}"}
        owner.request("POST", "/api/session", body="{}", headers={**headers, "content-type": "application/json"})
        answer = owner.getresponse()
        answer.read()
        cookie = answer.getheader("set-cookie").split(";", 1)[0]

        def ask(method: str, path: str, body: bytes | None = None, kind: str = "application/json") -> tuple[int, bytes]:
            owner.request(method, path, body=body, headers={**headers, "cookie": cookie, "content-type": kind})
            reply = owner.getresponse()
            return reply.status, reply.read()

        _, image = ask("POST", "/api/uploads?kind=image", pictures[0], "image/png")
        _, mask = ask("POST", "/api/uploads?kind=mask", pictures[1], "image/png")
        body = {**RUN, "image": json.loads(image)["id"], "mask": json.loads(mask)["id"], "iters": 2}
        run_id = json.loads(ask("POST", "/api/runs", json.dumps(body).encode())[1])["id"]
        deadline = time.monotonic() + 120
        while json.loads(ask("GET", f"/api/runs/{run_id}")[1])["state"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        flood = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        json_headers = {**headers, "content-type": "application/json"}
        started = time.monotonic()
        for k in range(1000):
            if k % 2:
                flood.request("GET", "/", headers={"host": f"127.0.0.1:{port}"})
            else:
                flood.request("POST", "/api/session", body="{}", headers=json_headers)
            flood.getresponse().read()
            assert time.monotonic() - started < 120  # bounded in time as well as in count
        status, data = ask("GET", f"/api/runs/{run_id}/result.png")
        assert status == 200 and data.startswith(b"\x89PNG")


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
    """The token opens the page once, and is exchanged for the session cookie (never again in a URL)."""
    with open_client(UiConfig(token="s3cret-token")) as client:
        assert client.get("/").status_code == 403
        assert client.get("/?token=wrong").status_code == 403
        assert client.get("/?token=s3cret-token").status_code == 200
        assert client.post("/api/session", json={}).status_code == 403  # no session without the token
        assert client.get("/api/info").status_code == 403
        wrong = client.post("/api/session", json={}, headers={"x-dip-token": "s3cret-tokeX"})
        assert wrong.status_code == 403
        answer = client.post("/api/session", json={}, headers={"x-dip-token": "s3cret-token"})
        assert answer.status_code == 200 and client.app.state.ui.cookie in answer.headers["set-cookie"]
        assert client.get("/api/info").status_code == 200  # the cookie now stands for the token
        assert client.get("/").status_code == 200  # a reload, the token gone from the address bar
        assert browser(client.app).get("/api/info?token=s3cret-token").status_code == 403  # no session: no API


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
    result = runner.invoke(cli_app, ["ui", "--no-browser"])
    assert result.exit_code == 2
    assert 'pip install -e ".[ui]"' in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("check", "value"), [("iters", float("inf")), ("kernel", 5), ("kernel", ["gaussian:2"])])
def test_form_values_of_the_wrong_kind_are_bad_requests(check, value):
    """A value of the wrong type is a 400 with a message, not a server error."""
    from dip_ui.forms import BadRequest, _integer, check_kernel

    with pytest.raises(BadRequest):
        _integer({"iters": value}, "iters", 1, 10) if check == "iters" else check_kernel(value)


def test_the_run_limit_holds_under_concurrent_requests(pictures, monkeypatch):
    """Issue 21, 3: 60 runs asked for at once on one session: no more than the limit are accepted."""
    from concurrent.futures import ThreadPoolExecutor

    from dip_ui.runs import RunManager

    real = RunManager._prepare

    def slow_prepare(self, *args):
        time.sleep(0.05)  # the window a slow set-up leaves between the count and the queueing
        return real(self, *args)

    monkeypatch.setattr(RunManager, "_prepare", slow_prepare)
    with open_client() as client:
        start_session(client)
        image, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
        body = {**RUN, "image": image["id"], "mask": mask["id"], "iters": 100_000}
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: client.post("/api/runs", json=body).status_code, range(60)))
        assert codes.count(200) == Limits().runs_per_session and codes.count(429) == 56, codes
        for run in client.get("/api/runs").json()["runs"]:
            client.post(f"/api/runs/{run['id']}/stop")


def test_uploads_are_kept_on_disk_not_decoded_in_memory(pictures):
    """Issue 21, 4: a small PNG of a big single-colour image costs the server no decoded pixels once answered."""
    import gc
    import tracemalloc

    big = png(np.full((2000, 2000, 3), 90, np.uint8))  # a few kB that decode to 48 MB of float32
    with open_client() as client:
        start_session(client)
        upload(client, big)  # the first: imports and caches out of the way
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                upload(client, big)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert held < 5e6, f"{held / 1e6:.0f} MB held after 3 uploads"


def test_upload_pixels_are_capped_per_session_and_in_all():
    """Issue 21, 4: past a session's pixel budget its oldest uploads are forgotten; past the server's, refused."""
    limits = Limits(max_pixels=10_000, pixels_per_session=25_000, pixels_in_all=35_000)
    with open_client(UiConfig(limits=limits)) as client:
        start_session(client)
        ids = [upload(client, png(np.full((100, 100), k, np.uint8)))["id"] for k in range(3)]
        assert client.get(f"/api/uploads/{ids[0]}/preview.png").status_code == 404  # 30,000 px > 25,000
        assert client.get(f"/api/uploads/{ids[2]}/preview.png").status_code == 200
        other = browser(client.app)
        start_session(other)
        upload(other, png(np.zeros((100, 100), np.uint8)))
        answer = other.post("/api/uploads?kind=image", content=png(np.zeros((100, 100), np.uint8)))
        assert answer.status_code == 503 and "images" in answer.json()["error"]  # 20,000 + 20,000 px > 35,000 in all


def test_request_bodies_in_flight_are_capped_in_all():
    """Issue 21, 4: the bytes of uploads being received at once are bounded for the whole server."""
    from dip_ui.server import Inflight

    inflight = Inflight(100)
    assert inflight.take(60) and not inflight.take(60) and inflight.take(40)
    inflight.give(60)
    assert inflight.take(50)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_upload_of_non_finite_pixels_is_a_bad_request(value):
    """Issue 21, 8: a float TIFF holding NaN or infinity is refused when it comes, with the reason."""
    pixels = np.full((16, 20), 0.5, np.float32)
    pixels[2:5, 3:7] = value
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="F").save(buffer, format="TIFF")
    with open_client() as client:
        start_session(client)
        answer = client.post("/api/uploads?kind=image", content=buffer.getvalue())
        assert answer.status_code == 400 and "not finite" in answer.json()["error"], answer.text


def test_deep_or_large_json_is_a_bad_request_with_its_own_limit(served):
    """Issue 21, 9 and cosmetics: JSON nested 20,000 deep is a 400, not a RecursionError; a body over the JSON
    limit quotes that limit, not the upload's."""
    client, image_id, mask_id = served
    deep = client.post("/api/runs", content=b"[" * 20_000 + b"]" * 20_000, headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nested" in deep.json()["error"]
    large = client.post("/api/runs", json={**RUN, "image": image_id, "mask": mask_id, "pad": "x" * 70_000})
    assert large.status_code == 413 and "64 kB" in large.json()["error"] and "MB" not in large.json()["error"]
    strings = {**RUN, "image": image_id, "mask": mask_id, "note": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "iters": 1}
    accepted = client.post("/api/runs", json=strings)  # brackets inside a string are not nesting
    assert accepted.status_code == 200, accepted.text
    wait(client, accepted.json()["id"], {"done", "failed", "stopped"})


@pytest.mark.parametrize(
    ("text", "depth"), [("{}", 1), ('{"a": [1, {"b": 2}]}', 3), (r'{"a": "\"[[[{{"}', 1), ('"[[["', 0), ("[[]]", 2)]
)
def test_json_depth_counts_brackets_outside_strings_only(text, depth):
    from dip_ui.forms import json_depth

    assert json_depth(text) == depth


def test_a_memory_refusal_in_the_page_gives_the_page_s_choices(pictures, monkeypatch):
    """Issue 21, cosmetics: the UI's refusal names what the page can change, not command-line flags."""
    from tests.conftest import BACKENDS

    module = __import__("dip_core.run.memory", fromlist=["available_bytes"])
    monkeypatch.setattr(module, "available_bytes", lambda: 50 * 2**20)
    with open_client() as client:
        start_session(client)
        image, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
        answer = client.post("/api/runs", json={**RUN, "image": image["id"], "mask": mask["id"], "iters": 2})
        assert answer.status_code == 400, answer.text
        message = answer.json()["error"]
        assert f"a {W}x{H} image" in message and "--" not in message and "Network" in message
    assert "torch" in BACKENDS


@pytest.mark.parametrize("host", ["0", "0.0.0.0", "::", "0000"])
def test_listening_everywhere_prints_a_url_one_can_open(host):
    """Issue 21, cosmetics: `--host 0` (every address, as 0.0.0.0) prints this machine's name, not http://0:PORT,
    and its Host check lets that name through."""
    import socket

    from dip_ui.serve import url_of

    url = url_of(host, 8765, None)
    assert url == f"http://{socket.gethostname()}:8765/", url
    assert UiConfig(host=host).allowed_hosts() is None


def test_an_aborted_upload_is_dropped_quietly(pictures):
    """Issue 21, cosmetics: a client that goes away mid-upload leaves no traceback and no file behind."""
    import anyio

    app = create_app(UiConfig())
    client = browser(app)
    start_session(client)
    cookie = f"{app.state.ui.cookie}={client.cookies.get(app.state.ui.cookie)}"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/uploads", "raw_path": b"/api/uploads", "query_string": b"kind=image", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"origin", BASE.encode()), (b"cookie", cookie.encode()),
                    (b"content-length", str(len(pictures[0])).encode())],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    messages = iter([{"type": "http.request", "body": pictures[0][:100], "more_body": True},
                     {"type": "http.disconnect"}])  # fmt: skip
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    async def call():
        await app(scope, receive, send)

    anyio.run(call)  # raised ClientDisconnect before: uvicorn logged its traceback
    assert not list(app.state.ui.sessions.folder.iterdir())
    app.state.ui.close()


def test_changes_need_the_page_s_own_origin_and_json_exactly(served):
    """Issue 21, hardening: every request that changes something says it comes from the page (Origin, or
    Sec-Fetch-Site where a browser sends no Origin); a run or a session is sent as application/json only."""
    client, image_id, mask_id = served
    app = client.app
    bare = TestClient(app, base_url=BASE, cookies=dict(client.cookies))  # the cookie, but no Origin
    body = {**RUN, "image": image_id, "mask": mask_id, "iters": 1}
    for method, path in [("POST", "/api/runs"), ("POST", "/api/uploads?kind=image"), ("POST", "/api/session"),
                         ("POST", "/api/runs/x/stop"), ("DELETE", "/api/runs/x")]:  # fmt: skip
        answer = bare.request(method, path, json=body)
        assert answer.status_code == 403 and "Origin" in answer.json()["error"], (method, path, answer.text)
        cross = bare.request(method, path, json=body, headers={"sec-fetch-site": "cross-site"})
        assert cross.status_code == 403, (method, path)
    same = bare.post("/api/session", json={}, headers={"sec-fetch-site": "same-origin"})
    assert same.status_code == 200
    for kind in ("text/plain", "application/x-www-form-urlencoded", "application/jsonp", "multipart/form-data"):
        answer = client.post("/api/runs", content=json.dumps(body), headers={"content-type": kind})
        assert answer.status_code == 415, kind
        assert client.post("/api/session", content=b"{}", headers={"content-type": kind}).status_code == 415
    answer = client.post(
        "/api/runs", content=json.dumps(body), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert answer.status_code == 200, answer.text
    wait(client, answer.json()["id"], {"done", "failed", "stopped"})


def test_the_cookie_is_named_for_the_port_and_the_server(pictures):
    """Issue 21, hardening: two servers on one machine (cookies ignore ports) name their cookies apart, and one's
    cookie is no session at the other."""
    first, second = create_app(UiConfig(port=8765)), create_app(UiConfig(port=8766))
    assert "8765" in first.state.ui.cookie and "8766" in second.state.ui.cookie
    assert create_app(UiConfig(port=8765)).state.ui.cookie != first.state.ui.cookie  # another instance
    client = browser(first)
    start_session(client)
    value = client.cookies.get(first.state.ui.cookie)
    for name in (first.state.ui.cookie, second.state.ui.cookie):
        stolen = browser(second)
        stolen.cookies.set(name, value)
        assert stolen.get("/api/runs").status_code == 403
    for app in (first, second):
        app.state.ui.close()


def test_no_url_of_the_page_carries_the_token():
    """Issue 21, hardening: the token is exchanged once for the cookie; images and downloads are plain URLs."""
    from importlib import resources

    script = (resources.files("dip_ui") / "static" / "app.js").read_text()
    assert "token=" not in script and "history.replaceState" in script


def test_a_run_past_the_kept_count_says_which_finished_run_it_deleted(pictures):
    """Issue 21, hardening: past `kept_per_session` runs the oldest finished one goes, and the answer says so
    (the page shows it), rather than it vanishing silently."""
    with open_client(UiConfig(limits=Limits(kept_per_session=2))) as client:
        start_session(client)
        image, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
        body = {**RUN, "image": image["id"], "mask": mask["id"], "iters": 1}
        ids = []
        for _ in range(3):
            answer = client.post("/api/runs", json=body).json()
            ids.append(answer["id"])
            wait(client, answer["id"], {"done", "failed", "stopped"})
        assert answer["forgotten"] == [ids[0]]
        assert client.get(f"/api/runs/{ids[0]}").status_code == 404
        assert "forgotten" in client.get("/static/app.js").text


def test_memory_is_reserved_while_a_run_is_queued_or_running(pictures, monkeypatch):
    """Issue 21, hardening: a run's memory estimate is held from its acceptance to its end, so that a run on
    another device (which would run beside it) is refused when both do not fit, though each alone would."""
    import dip_ui.runs
    from dip_core.problem.image import from_array
    from dip_core.run.memory import estimate_bytes
    from dip_core.run.prepare import prepare
    from dip_ui.forms import parse_run

    body = {**RUN, "image": "-", "mask": "-", "iters": 100_000}
    image = from_array(pictures[2])
    one_run = prepare("inpaint", image, parse_run(body, 10**6).options(), mask=from_array(pictures[3]))
    one = estimate_bytes(one_run.cfg, one_run.padded.out_height, one_run.padded.out_width, one_run.options.window)
    module = __import__("dip_core.run.memory", fromlist=["available_bytes"])
    queues = iter(["cpu", "gpu", "gpu"])
    monkeypatch.setattr(dip_ui.runs, "device_queue", lambda prepared: next(queues))  # a second device, as a GPU
    monkeypatch.setattr(module, "available_bytes", lambda: int(1.5 * one))  # one run fits, two do not
    with open_client() as client:
        start_session(client)
        uploaded, mask = upload(client, pictures[0]), upload(client, pictures[1], "mask")
        body.update(image=uploaded["id"], mask=mask["id"])
        first = client.post("/api/runs", json=body).json()
        second = client.post("/api/runs", json=body)
        assert second.status_code == 503 and "reserved" in second.json()["error"], second.text
        client.post(f"/api/runs/{first['id']}/stop")
        wait(client, first["id"], {"stopped", "done", "failed"})
        third = client.post("/api/runs", json={**body, "iters": 1})  # the first one's reservation is released
        assert third.status_code == 200, third.text
        wait(client, third.json()["id"], {"stopped", "done", "failed"})
