"""Make the user guide's example images (docs/examples/): every task on the paper's images, downscaled.

    .venv/bin/python scripts/make_examples.py --data DIR_OF_THE_PAPERS_IMAGES [--backend torch] [--iters-scale 1.0]

Inputs are prepared from the paper's test images (downscaled so that a 2-core
CPU finishes in minutes), each task is run with `dip run` and its preset, and
docs/examples/ receives small PNGs (input | result | reference) and results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip_core.problem import degrade as dg  # noqa: E402
from dip_core.problem.image import from_array, load_image, save_image  # noqa: E402


def prep(data: Path, work: Path) -> dict[str, dict]:
    """Clean and corrupted inputs for each case, written to `work`."""
    work.mkdir(parents=True, exist_ok=True)

    def small(name: str, size: tuple[int, int], mode: str = "RGB") -> np.ndarray:
        im = Image.open(data / name).convert(mode).resize(size, Image.Resampling.LANCZOS)
        a = np.asarray(im, np.float32) / 255.0
        return a[..., None] if a.ndim == 2 else a

    def put(name: str, x: np.ndarray) -> Path:
        path = work / name
        save_image(path, from_array(x))
        return path

    cases: dict[str, dict] = {}
    f16 = small("F16_GT.png", (128, 128))
    cases["denoise"] = {
        "args": [str(put("f16_noisy25.png", dg.add_noise(f16, 25, 0)))],
        "reference": put("f16.png", f16),
        "what": "F16, 128x128, Gaussian noise sigma=25",
    }
    snail = load_image(data / "snail.jpg").pixels[60:188, 120:280]  # a 160x128 crop at full resolution
    cases["jpeg"] = {"args": [str(put("snail_crop.png", snail))], "reference": None, "what": "snail.jpg crop 160x128"}
    kate = small("kate.png", (128, 128))
    mask_im = Image.open(data / "kate_mask.png").convert("L").resize((128, 128), Image.Resampling.NEAREST)
    mask = (np.asarray(mask_im, np.float32) / 255.0 >= 0.5).astype(np.float32)[..., None]
    cases["inpaint"] = {
        "args": [str(put("kate_text.png", kate * mask + (1 - mask))), "--mask", str(put("kate_text_mask.png", mask))],
        "reference": put("kate.png", kate),
        "what": "kate with its text mask, 128x128",
    }
    barbara = small("barbara.png", (128, 128), "L")
    drop = dg.drop_mask(128, 128, 0.5, 0)
    cases["restore"] = {
        "args": [str(put("barbara_drop50.png", barbara * drop)), "--mask", str(put("barbara_drop50_mask.png", drop))],
        "reference": put("barbara.png", barbara),
        "what": "barbara (grey), 128x128, 50% of pixels dropped",
    }
    zebra = small("zebra_GT.png", (192, 128))
    cases["sr"] = {
        "args": [str(put("zebra_lr4.png", dg.resize(zebra, 32, 48, Image.Resampling.LANCZOS))), "--factor", "4"],
        "reference": put("zebra.png", zebra),
        "what": "zebra, 48x32 -> 192x128 (x4)",
    }
    blurred = dg.add_noise(dg.blur(f16, dg.parse_kernel("gaussian:1.5")), 2, 0)
    cases["deblur"] = {
        "args": [str(put("f16_blur.png", blurred)), "--kernel", "gaussian:1.5"],
        "reference": cases["denoise"]["reference"],
        "what": "F16, 128x128, Gaussian blur sigma=1.5 + noise sigma=2",
    }
    return cases


def strip(paths: list[Path | None], labels: list[str], out: Path) -> None:
    """Images side by side with a caption strip under each."""
    from PIL import ImageDraw

    ims = [Image.open(p).convert("RGB") for p in paths if p is not None]
    ims = [im.resize((round(im.width * 192 / im.height), 192), Image.Resampling.NEAREST) for im in ims]
    sheet = Image.new("RGB", (sum(im.width for im in ims) + 4 * (len(ims) - 1), 192 + 18), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for im, label in zip(ims, labels, strict=False):
        sheet.paste(im, (x, 0))
        draw.text((x + 3, 194), label, fill="black")
        x += im.width + 4
    sheet.save(out, optimize=True)


def _rel(arg: str) -> str:
    """Paths in the recorded command relative to the project root."""
    return str(Path(arg).relative_to(ROOT)) if arg.startswith(str(ROOT)) else arg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="the paper's test images")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "examples")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--tasks", nargs="*", default=["denoise", "jpeg", "inpaint", "restore", "sr", "deblur"])
    ap.add_argument("--iters", type=json.loads, default={}, help='JSON {"task": iterations} overrides')
    args = ap.parse_args()
    work = args.out / "inputs"
    cases = prep(args.data, work)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    dip = [sys.executable, str(ROOT / "cli.py")]
    for task in args.tasks:
        case = cases[task]
        stem = f"{task}_{args.backend}"
        out, report = args.out / f"{stem}.png", args.out / f"{stem}.json"
        cmd = [*dip, "run", task, *case["args"], "-b", args.backend, "--out", str(out), "--report", str(report)]
        cmd += ["--force", "-q"]
        if case["reference"] is not None:
            cmd += ["--reference", str(case["reference"])]
        if task in args.iters:
            cmd += ["--iters", str(args.iters[task])]
        print(" ".join(cmd[1:]), flush=True)
        start = time.time()
        subprocess.run(cmd, check=True)
        rep = json.loads(report.read_text())
        keep = ("task", "backend", "device", "iters", "ms_per_iter", "seconds", "psnr_input", "psnr_result")
        row = {k: rep.get(k) for k in (*keep, "best_iter", "ssim")}
        row |= {"what": case["what"], "command": "dip " + " ".join(_rel(a) for a in cmd[2:])}
        row["wall_seconds"] = time.time() - start
        results[stem] = row
        labels = ["input", f"result {rep['psnr_result']:.2f} dB" if rep.get("psnr_result") else "result"]
        paths = [Path(case["args"][0]), out]
        if case["reference"] is not None:
            labels[0] = f"input {rep['psnr_input']:.2f} dB"
            paths.append(case["reference"])
            labels.append("reference")
        strip(paths, labels, args.out / f"{stem}_strip.png")
        report.write_text(json.dumps({k: v for k, v in rep.items() if not k.endswith("curve")}, indent=2))
        results_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
