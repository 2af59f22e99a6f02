"""`dip ui` in a real browser: headless Chromium through Selenium (the system's chromedriver, nothing downloaded).

The server runs in a thread on a free port, one for the module, with one browser; each test starts a session of
its own. The first test uploads a small image through the page's file input, chooses inpainting, paints a stroke
on the canvas with the mouse, starts a short run (torch's CPU, the tiny network) and waits for the result; the
others check what the page shows per task (the registry's), the status line, Start during a run, the warning for
a short run, the curves' legend and the layout of an 800 px high window. No console error may appear; a
screenshot is kept in $DIP_TEST_ARTIFACTS (default: tests/artifacts/ui.png). Skipped, with the reason, where the
`ui` extra, Selenium, Chromium or chromedriver is missing (scripts/setup.sh installs the Python side; .ci/run the
browser on Debian and Ubuntu)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from dip_core.backend import available_backends
from dip_core.problem.registry import Task, describe
from tests.browser import artifacts, browser_and_driver_or_skip, chrome

pytestmark = pytest.mark.browser

H, W = 29, 37
WAIT_S = 120


def _needs() -> tuple[str, str]:
    """The Chromium binary and its chromedriver, or a skip that says what is missing."""
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed (pip install -e '.[ui]')")
    if "torch" not in available_backends():
        pytest.skip("the run here uses torch's CPU: pip install torch")
    return browser_and_driver_or_skip()


# Fetches a file of the run as the page does (its cookie) and counts the mask's black (to fill in) pixels.
COUNT_BLACK = """
const [url, done] = arguments;
fetch(url).then((r) => r.blob()).then(createImageBitmap).then((bitmap) => {
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let black = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] < 128) black += 1;
  done([bitmap.width, bitmap.height, black]);
}).catch((e) => done(String(e)));
"""


@dataclass
class Page:
    driver: Any
    url: str
    picture: Path


@pytest.fixture(scope="module")
def served_page(tmp_path_factory):
    """One server and one headless Chromium (1280x800) for the module's tests."""
    browser, driver_path = _needs()
    from dip_ui.serve import Served

    picture = tmp_path_factory.mktemp("ui") / "small.png"
    PILImage.fromarray(np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(picture)
    with Served() as url:
        driver = chrome(browser, driver_path, 1280, 800)
        try:
            yield Page(driver, url, picture)
        finally:
            driver.quit()


@pytest.fixture
def page(served_page):
    """The module's browser, for one test; no console error may appear in it."""
    served_page.driver.get_log("browser")  # what earlier tests left
    yield served_page
    assert [e for e in served_page.driver.get_log("browser") if e["level"] == "SEVERE"] == []


def by_id(page: Page, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return page.driver.find_element(By.ID, name)


def until(page: Page, condition: Any, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(page.driver, timeout).until(lambda _: condition())


def fresh(page: Page, image: bool = True) -> None:
    """The page loaded in a session of its own (no run of another test shown), the picture uploaded."""
    from selenium.webdriver.support.ui import Select

    page.driver.delete_all_cookies()
    page.driver.get(page.url)
    until(page, lambda: len(Select(by_id(page, "task")).options) == len(Task))
    if image:
        by_id(page, "file").send_keys(str(page.picture))
        until(page, lambda: f"{W}x{H}" in by_id(page, "image-info").text)


def choose(page: Page, task: str, iters: int | None = None, **more: str) -> None:
    """A task and its settings: torch's CPU, the tiny network, `iters` iterations, and the fields in `more`."""
    from selenium.webdriver.support.ui import Select

    for name, value in {"task": task, "backend": "torch", "device": "cpu", "net": "tiny"}.items():
        Select(by_id(page, name)).select_by_value(value)
    for name, value in {"iters": "" if iters is None else str(iters), **more}.items():
        field = by_id(page, name)
        field.clear()
        field.send_keys(value)


def paint(page: Page) -> None:
    """One stroke across the mask canvas with the mouse."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = by_id(page, "mask-canvas")
    width = canvas.size["width"]
    ActionChains(page.driver).move_to_element_with_offset(canvas, -width // 4, 0).click_and_hold().move_by_offset(
        width // 4, 5
    ).move_by_offset(width // 8, -5).release().perform()


def run_to_the_end(page: Page) -> str:
    """Start, wait for the end; the final state."""
    until(page, lambda: by_id(page, "start").is_enabled())
    by_id(page, "start").click()
    status = by_id(page, "status")
    until(page, lambda: status.get_attribute("data-state") in ("done", "failed", "stopped"))
    return status.get_attribute("data-state")


def test_paint_a_mask_and_restore_in_headless_chromium(page):
    driver = page.driver
    fresh(page, image=False)
    assert driver.title == "dip ui: Deep Image Prior"
    by_id(page, "file").send_keys(str(page.picture))
    until(page, lambda: f"{W}x{H}" in by_id(page, "image-info").text)
    choose(page, "inpaint", 20)
    start = by_id(page, "start")
    assert not start.is_enabled()  # nothing painted yet
    paint(page)
    until(page, lambda: start.is_enabled())
    until(page, lambda: "ms/iter" in by_id(page, "estimate").text)
    assert run_to_the_end(page) == "done", by_id(page, "status").text
    result = by_id(page, "result")
    until(page, lambda: result.is_displayed() and driver.execute_script("return arguments[0].naturalWidth", result))
    assert driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result) == [W, H]
    for link in ("dl-result", "dl-mask", "dl-report"):
        assert by_id(page, link).is_displayed(), link
    mask_url = by_id(page, "dl-mask").get_attribute("href")
    width_px, height_px, black = driver.execute_async_script(COUNT_BLACK, mask_url)
    assert (width_px, height_px) == (W, H) and 0 < black < W * H  # the stroke is the mask's hole
    driver.execute_script("window.scrollTo(0, 0)")
    (artifacts() / "ui.png").write_bytes(driver.get_screenshot_as_png())


# Fetches a JSON file of the run as the page does (its cookie).
FETCH_JSON = """
const [url, done] = arguments;
fetch(url).then((r) => r.json()).then(done).catch((e) => done(String(e)));
"""


def test_the_page_shows_and_sends_what_the_registry_says_of_each_task(page):
    """The task picker shows each task's summary; the kernel, peak and mask fields show for the tasks whose spec
    takes them; a poisson run sends the peak typed (and its report has it)."""
    from selenium.webdriver.support.ui import Select

    fresh(page)
    options = Select(by_id(page, "task")).options
    assert [o.get_attribute("value") for o in options] == [t.value for t in Task]
    for option in options:
        summary = describe(option.get_attribute("value"))["summary"]
        assert option.get_attribute("title") == summary and summary in option.text
    for task in Task:
        Select(by_id(page, "task")).select_by_value(task.value)
        takes = describe(task)["options"]
        shown = {name: by_id(page, field).is_displayed() for name, field in
                 [("kernel", "kernel"), ("peak", "peak"), ("mask", "mask-tools")]}  # fmt: skip
        assert shown == {name: name in takes for name in shown}, task
    choose(page, "poisson", 3, peak="40")
    assert run_to_the_end(page) == "done", by_id(page, "status").text
    report = page.driver.execute_async_script(FETCH_JSON, by_id(page, "dl-report").get_attribute("href"))
    assert report["ui"]["request"]["peak"] == 40 and report["task"] == "poisson", report


def test_the_status_line_says_what_is_ready_and_what_is_missing(page):
    """Issue 25, 8: not "Choose an image… then start" once the image is there and the mask painted."""
    fresh(page, image=False)
    status = by_id(page, "status")
    assert "Choose an image" in status.text
    by_id(page, "file").send_keys(str(page.picture))
    until(page, lambda: f"{W}x{H}" in by_id(page, "image-info").text)
    choose(page, "inpaint")
    until(page, lambda: "Image loaded; paint the mask" in status.text)
    assert "Choose an image" not in status.text
    paint(page)
    until(page, lambda: "Ready (image loaded, mask painted): press Start" in status.text)
    choose(page, "denoise")
    assert "Ready (image loaded): press Start" in status.text


def test_start_waits_for_the_end_of_a_run_of_the_page(page):
    """Issue 25, 8: Start is disabled while a run of this page is queued or running, and comes back at its end."""
    fresh(page)
    choose(page, "denoise", 100_000)
    start, status = by_id(page, "start"), by_id(page, "status")
    until(page, lambda: start.is_enabled())
    start.click()
    until(page, lambda: status.get_attribute("data-state") == "running")
    try:
        assert not start.is_enabled() and "Running on torch" in status.text
    finally:
        by_id(page, "stop").click()  # the CPU is free for the next test either way
        until(page, lambda: status.get_attribute("data-state") == "stopped")
    until(page, lambda: start.is_enabled(), timeout=15)  # the list of runs, asked again, says none goes


def test_an_iteration_count_far_below_the_preset_s_is_warned(page):
    """Issue 25, 8: 60 iterations of inpainting's 6001 is warned in the page (any task: under 25 % of the
    preset's), and the warning goes once the count is not that short."""
    fresh(page, image=False)
    warning = by_id(page, "iters-warning")
    choose(page, "inpaint", 60)
    assert warning.is_displayed() and "60 iterations is far below the 6001 of the inpaint preset" in warning.text
    choose(page, "inpaint", 2000)
    assert not warning.is_displayed()
    choose(page, "inpaint")  # the preset's own
    assert not warning.is_displayed()


def test_the_legend_covers_no_curve(page):
    """Issue 25, 8: the legend is outside the plot, above the canvas the curves are drawn on."""
    fresh(page)
    choose(page, "denoise", 5)
    assert run_to_the_end(page) == "done", by_id(page, "status").text
    legend, canvas = by_id(page, "curves-legend"), by_id(page, "curves")
    assert legend.is_displayed() and "loss" in legend.text and "PSNR" in legend.text
    legend_box, canvas_box = legend.rect, canvas.rect
    assert legend_box["y"] + legend_box["height"] <= canvas_box["y"], (legend_box, canvas_box)


def test_the_right_panel_fits_an_800_px_high_window(page):
    """Issue 25, 8: in a 1280x800 window the right panel ends within the window and scrolls on its own, its run
    bar (Start, Stop, the status) staying in sight."""
    driver = page.driver
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        fresh(page)
        choose(page, "inpaint")
        box = "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return [r.top, r.bottom];"
        assert driver.execute_script("return innerHeight") == 800
        top, bottom = driver.execute_script(box, "work")
        assert top >= 0 and bottom <= 800, (top, bottom)
        driver.execute_script("document.getElementById('kept').scrollIntoView()")  # the panel's last line
        assert 0 <= driver.execute_script(box, "kept")[0] < 800
        start_top, start_bottom = driver.execute_script(box, "start")
        assert top <= start_top and start_bottom <= 800, (start_top, start_bottom)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
