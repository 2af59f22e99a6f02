"""First measurement of the ES-WMV auto-stop gap (issue in progress), reproducible:

    .venv/bin/python -m bench.autostop [--data ../shared/data]

Denoises a synthetic scene and F16 (64x64) at sigma 15/25/50 with the small
network, --stop auto (W=100, P=300), and prints the PSNR at the detected point
against the best PSNR seen in the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dip_core.api import restore
from dip_core.degrade import add_noise
from dip_core.examples import synthetic_scene


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args()
    images = {"scene": synthetic_scene(64, 64)}
    f16 = args.data / "F16_GT.png"
    if f16.exists():
        im = Image.open(f16).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
        images["f16"] = np.asarray(im, np.float32) / 255
    gaps = []
    for name, clean in images.items():
        for sigma in (15, 25, 50):
            r = restore(
                "denoise", add_noise(clean, sigma, 0), backend=args.backend, device="cpu", reference=clean,
                iters=1500, net="small", input_channels=8, stop="auto", window=100, patience=300, exp_weight=0.0,
            )  # fmt: skip
            rep = r.report
            gaps.append(rep["auto_gap"])
            print(
                f"{name} sigma={sigma}: stop at {rep['stop_iter']} (ran {rep['iters']}), "
                f"auto {rep['psnr_auto']:.2f} dB, best {rep['best_psnr']:.2f} dB at {rep['best_iter']}, "
                f"gap {rep['auto_gap']:.2f} dB",
                flush=True,
            )
    print(f"mean gap {np.mean(gaps):.2f} dB over {len(gaps)} runs")


if __name__ == "__main__":
    main()
