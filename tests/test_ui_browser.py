"""`dip ui` in a real browser: headless Chromium through Selenium (the system's chromedriver, nothing downloaded).

The server runs in a thread on a free port; the test uploads a small image through the page's file input, chooses
inpainting, paints a stroke on the canvas with the mouse, starts a short run (torch's CPU, the tiny network) and
waits for the result. No console error may appear; a screenshot is kept in $DIP_TEST_ARTIFACTS (default:
tests/artifacts/ui.png). Skipped, with the reason, where the `ui` extra, Selenium, Chromium or chromedriver is
missing (scripts/setup.sh installs the Python side; .ci/run the browser on Debian and Ubuntu)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from dip_core.backend import available_backends
from tests.browser import Missing, artifacts, browser_and_driver, chrome

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
    try:
        return browser_and_driver()
    except Missing as exc:
        pytest.skip(str(exc))


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


def test_paint_a_mask_and_restore_in_headless_chromium(tmp_path):
    browser, driver_path = _needs()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from dip_ui.serve import Served

    rng = np.random.default_rng(5)
    picture = tmp_path / "small.png"
    PILImage.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(picture)

    with Served() as url:
        driver = chrome(browser, driver_path, 1280, 900)
        try:
            wait = WebDriverWait(driver, WAIT_S)
            driver.get(url)
            assert driver.title == "dip ui: Deep Image Prior"
            wait.until(lambda d: len(Select(d.find_element(By.ID, "task")).options) == 6)
            driver.find_element(By.ID, "file").send_keys(str(picture))
            wait.until(lambda d: "37x29" in d.find_element(By.ID, "image-info").text)
            Select(driver.find_element(By.ID, "task")).select_by_value("inpaint")
            Select(driver.find_element(By.ID, "backend")).select_by_value("torch")
            Select(driver.find_element(By.ID, "device")).select_by_value("cpu")
            Select(driver.find_element(By.ID, "net")).select_by_value("tiny")
            iters = driver.find_element(By.ID, "iters")
            iters.clear()
            iters.send_keys("20")
            start = driver.find_element(By.ID, "start")
            assert not start.is_enabled()  # nothing painted yet

            canvas = driver.find_element(By.ID, "mask-canvas")
            width = canvas.size["width"]
            ActionChains(driver).move_to_element_with_offset(canvas, -width // 4, 0).click_and_hold().move_by_offset(
                width // 4, 5
            ).move_by_offset(width // 8, -5).release().perform()
            wait.until(lambda d: d.find_element(By.ID, "start").is_enabled())
            wait.until(lambda d: "ms/iter" in d.find_element(By.ID, "estimate").text)
            start.click()

            status = driver.find_element(By.ID, "status")
            wait.until(lambda d: status.get_attribute("data-state") in ("done", "failed", "stopped"))
            assert status.get_attribute("data-state") == "done", status.text
            result = driver.find_element(By.ID, "result")
            wait.until(lambda d: result.is_displayed() and d.execute_script("return arguments[0].naturalWidth", result))
            assert driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", result) == [
                W,
                H,
            ]
            for link in ("dl-result", "dl-mask", "dl-report"):
                assert driver.find_element(By.ID, link).is_displayed(), link
            mask_url = driver.find_element(By.ID, "dl-mask").get_attribute("href")
            width_px, height_px, black = driver.execute_async_script(COUNT_BLACK, mask_url)
            assert (width_px, height_px) == (W, H) and 0 < black < W * H  # the stroke is the mask's hole
            driver.execute_script("window.scrollTo(0, 0)")
            (artifacts() / "ui.png").write_bytes(driver.get_screenshot_as_png())
            severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
            assert severe == []
        finally:
            driver.quit()
