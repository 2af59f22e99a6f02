"""The chip table's HTML page in a real browser: headless Chromium through Selenium (the system's chromedriver, so
nothing is downloaded). It must load with no console error, show exactly the folder's rows and both plots; a
screenshot of the whole page is kept in $DIP_TEST_ARTIFACTS (default: tests/artifacts/).

Skipped, with the reason, where Selenium, Chromium or chromedriver is missing (scripts/setup.sh installs them on
Debian and Ubuntu when it runs as root)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests import chip_results as cr

HERE = Path(__file__).resolve().parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _browser_and_driver() -> tuple[str, str]:
    """The Chromium binary and its chromedriver, or a skip that says which is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[browser]')")
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        pytest.skip(f"no Chromium found ({', '.join(BROWSERS)}): apt-get install chromium chromium-driver")
    driver = next((d for d in DRIVERS if os.access(d, os.X_OK)), None) or shutil.which("chromedriver")
    if driver is None:
        pytest.skip(f"no chromedriver found ({', '.join(DRIVERS)} or on PATH): apt-get install chromium-driver")
    return browser, driver


def _artifacts() -> Path:
    folder = Path(os.environ.get("DIP_TEST_ARTIFACTS") or HERE / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _full_page_png(driver) -> bytes:
    """The whole page, not only the window: Chrome's own capture beyond the viewport."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])


@pytest.fixture
def page(tmp_path) -> Path:
    folder = cr.write_folder(tmp_path / "results")
    path = tmp_path / "chips.html"
    result = CliRunner().invoke(app, ["bench", "report", str(folder), "--html", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_chip_table_page_in_headless_chromium(page):
    browser, driver_path = _browser_and_driver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(page.as_uri())
        assert driver.title == "dip benchmark: chip table"
        rows = driver.find_elements(By.CSS_SELECTOR, "#chip-table tr.row")
        found = [(r.get_attribute("data-machine"), r.get_attribute("data-backend"), r.get_attribute("data-device"))
                 for r in rows]  # fmt: skip
        assert sorted(found) == sorted(cr.EXPECTED_ROWS)
        for plot in ("plot-speed", "plot-ratio", "plot-sustained"):
            svg = driver.find_element(By.CSS_SELECTOR, f"#{plot} svg")
            assert svg.size["width"] > 200 and svg.size["height"] > 100, (plot, svg.size)
        problems = driver.find_elements(By.CSS_SELECTOR, "#problems li.problem")
        assert sorted(Path(p.text.split(": ")[0]).name for p in problems) == sorted(cr.BAD_FILES)
        # as wide as the table, so that the screenshot shows every column
        width = driver.execute_script("return document.getElementById('chip-table').scrollWidth")
        driver.set_window_size(max(1400, width + 80), 1000)
        try:
            png = _full_page_png(driver)
        except Exception:  # an older driver without the DevTools call: the window alone
            png = driver.get_screenshot_as_png()
        (_artifacts() / "chip-table.png").write_bytes(png)
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()
