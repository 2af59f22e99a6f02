"""Make docs/ui.png: `dip ui` in headless Chromium with a real restoration done.

    .venv/bin/python scripts/ui_screenshot.py [--iters 300] [--backend torch] [--out docs/ui.png]

A scene made by `dip example`, cropped to 96x96, is uploaded through the page; three strokes are painted on it
with the mouse, inpainting runs with its preset for `--iters` iterations, and the page is captured once the run
is done (PNG, reduced to 256 colours to stay small). Needs the `ui` and `browser` extras, Chromium and chromedriver.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip_core.problem.registry import Task  # noqa: E402
from dip_ui.serve import Served  # noqa: E402
from tests.browser import Missing, browser_and_driver, chrome, full_page_png  # noqa: E402


def scene(folder: Path) -> Path:
    """A 96x96 crop of the scene `dip example` makes."""
    full = folder / "scene.png"
    subprocess.run([str(ROOT / ".venv/bin/dip"), "example", str(full), "--size", "160", "160"], check=True)
    crop = folder / "scene_crop.png"
    with Image.open(full) as im:
        im.crop((40, 30, 136, 126)).save(crop)
    return crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui.png")
    args = parser.parse_args()

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    try:
        browser, driver_path = browser_and_driver()
    except Missing as exc:
        sys.exit(str(exc))
    with tempfile.TemporaryDirectory() as tmp, Served() as url:
        picture = scene(Path(tmp))
        driver = chrome(browser, driver_path, 1280, 1000)
        try:
            wait = WebDriverWait(driver, 3600)
            driver.get(url)
            wait.until(lambda d: len(Select(d.find_element(By.ID, "task")).options) == len(Task))
            driver.find_element(By.ID, "file").send_keys(str(picture))
            wait.until(lambda d: "96x96" in d.find_element(By.ID, "image-info").text)
            Select(driver.find_element(By.ID, "task")).select_by_value("inpaint")
            Select(driver.find_element(By.ID, "backend")).select_by_value(args.backend)
            Select(driver.find_element(By.ID, "device")).select_by_value("cpu")
            driver.find_element(By.ID, "iters").send_keys(str(args.iters))
            size = driver.find_element(By.ID, "brush-size")
            driver.execute_script("arguments[0].value = 5; arguments[0].dispatchEvent(new Event('input'))", size)
            canvas = driver.find_element(By.ID, "mask-canvas")
            w = canvas.size["width"]
            for dx, dy, moves in (
                (-w // 3, -w // 4, [(w // 5, w // 12), (w // 5, -w // 24)]),
                (-w // 4, w // 6, [(w // 3, 0)]),
                (w // 8, -w // 3, [(0, w // 4), (w // 10, w // 6)]),
            ):
                chain = ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).click_and_hold()
                for mx, my in moves:
                    chain = chain.move_by_offset(mx, my)
                chain.release().perform()
            wait.until(lambda d: "ms/iter" in d.find_element(By.ID, "estimate").text)
            driver.find_element(By.ID, "start").click()
            status = driver.find_element(By.ID, "status")
            wait.until(lambda d: status.get_attribute("data-state") in ("done", "failed", "stopped"))
            print(status.text)
            driver.execute_script("window.scrollTo(0, 0)")
            shot = Image.open(io.BytesIO(full_page_png(driver))).convert("RGB")
        finally:
            driver.quit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
