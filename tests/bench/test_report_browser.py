"""The chip table's HTML page in a real browser: headless Chromium through Selenium (the system's chromedriver, so
nothing is downloaded). It must load with no console error, show exactly the folder's rows and both plots; a
screenshot of the whole page is kept in $DIP_TEST_ARTIFACTS (default: tests/artifacts/).

Skipped, with the reason, where Selenium, Chromium or chromedriver is missing (.ci/run installs them on Debian and
Ubuntu when it runs as root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import app
from tests.bench import chip_results as cr
from tests.browser import artifacts, browser_and_driver_or_skip, chrome, full_page_png
from tests.common import runner

pytestmark = pytest.mark.browser


@pytest.fixture
def page(tmp_path) -> Path:
    folder = cr.write_folder(tmp_path / "results")
    path = tmp_path / "chips.html"
    result = runner.invoke(app, ["bench", "report", str(folder), "--html", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_chip_table_page_in_headless_chromium(page):
    browser, driver_path = browser_and_driver_or_skip()
    from selenium.webdriver.common.by import By

    driver = chrome(browser, driver_path, 1400, 1000)
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
        (artifacts() / "chip-table.png").write_bytes(full_page_png(driver))
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()
