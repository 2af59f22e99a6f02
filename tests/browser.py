"""Headless Chromium through Selenium, with the system's chromedriver (nothing downloaded): shared by the browser
tests (marked `browser`: tests/bench/test_report_browser.py, tests/ui/test_ui_browser.py) and
scripts/ui_screenshot.py."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


class Missing(Exception):
    """What is missing for a browser run, and how to install it."""


def browser_and_driver() -> tuple[str, str]:
    """The Chromium binary and its chromedriver; Missing says which is not there."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise Missing("selenium is not installed (pip install -e '.[browser]')") from None
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        raise Missing(f"no Chromium found ({', '.join(BROWSERS)}): apt-get install chromium chromium-driver")
    driver = next((d for d in DRIVERS if os.access(d, os.X_OK)), None) or shutil.which("chromedriver")
    if driver is None:
        raise Missing(f"no chromedriver found ({', '.join(DRIVERS)} or on PATH): apt-get install chromium-driver")
    return browser, driver


def browser_and_driver_or_skip() -> tuple[str, str]:
    """browser_and_driver() in a test: where something is missing, the test skips and says what."""
    import pytest

    try:
        return browser_and_driver()
    except Missing as exc:
        pytest.skip(str(exc))


def chrome(browser: str, driver_path: str, width: int, height: int) -> Any:
    """A headless Chrome of this window size that keeps the console's messages (driver.get_log("browser"))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def full_page_png(driver: Any) -> bytes:
    """The whole page, not only the window: Chrome's own capture beyond the viewport (the window alone where the
    driver lacks that call)."""
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
    except Exception:
        return driver.get_screenshot_as_png()
    return base64.b64decode(shot["data"])


def artifacts() -> Path:
    """Where tests leave screenshots: $DIP_TEST_ARTIFACTS, else tests/artifacts/."""
    folder = Path(os.environ.get("DIP_TEST_ARTIFACTS") or HERE / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
