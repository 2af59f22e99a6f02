"""`dip bench quality`: the paper's cases (or the project's own scene) on each backend, over seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from dip_core.problem import degrade as dg
from dip_core.problem.examples import synthetic_scene
from dip_core.problem.image import Image, from_array, load_image
from dip_core.run.api import restore
from dip_core.run.prepare import Result
from dip_core.run.summary import summary_line


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    files: tuple[str, ...]  # clean image first (or the only input), then a mask
    paper_psnr: float | None  # the paper's published figure (its Table 1), where one exists
    paper_note: str
    factor: int = 4  # sr: the upscaling factor
    preset: str | None = None  # a preset of dip_core/problem/presets.py; None: the task's default


CASES = (
    Case("f16-denoise-s25", "denoise", ("F16_GT.png",), None, "paper: 29.22 dB mean of 9 images, 30.43 with averaging"),
    Case("kate-inpaint", "inpaint", ("kate.png", "kate_mask.png"), None, "paper: visual only"),
    Case("barbara-restore-50", "restore", ("barbara.png",), 32.22, "paper Table 1"),
    Case("zebra-sr4", "sr", ("zebra_GT.png",), None, "paper: Set5 29.90 / Set14 27.00 (Y channel)"),
    Case("snail-dejpeg", "jpeg", ("snail.jpg",), None, "no ground truth: visual only"),
)
# Cases on the project's synthetic scene (dip_core.problem.examples): no image to download, so any machine runs them.
BUILTIN_CASES = (
    Case("scene-denoise-s25", "denoise", (), None, "the project's synthetic scene, noise sigma 25"),
    Case("scene-inpaint", "inpaint", (), None, "the project's synthetic scene under a text mask"),
    Case("scene-sr4", "sr", (), None, "the project's synthetic scene, 4x"),
)

# quick: downscaled so the long side is `long_side`, fewer iterations; paper: full size, the presets.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "long_side": 64,
        "iters": {"denoise": 300, "inpaint": 300, "restore": 400, "sr": 300, "jpeg": 200},
    },
    "paper": {"long_side": None, "iters": {}},
    # For the test suite: every code path in seconds, numbers meaningless.
    "smoke": {"long_side": 52, "iters": {"denoise": 2, "inpaint": 2, "restore": 2, "sr": 2, "jpeg": 2}},
}


def _resized(img: Image, long_side: int | None, multiple: int = 1) -> np.ndarray:
    x = img.pixels
    if long_side is None or max(x.shape[:2]) <= long_side:
        h, w = x.shape[:2]
    else:
        scale = long_side / max(x.shape[:2])
        h, w = round(x.shape[0] * scale), round(x.shape[1] * scale)
    h, w = h - h % multiple, w - w % multiple
    if (h, w) == x.shape[:2]:
        return x
    return dg.resize(x, h, w, PILImage.Resampling.LANCZOS)


def _first(case: Case, data: Path | None, long_side: int | None) -> Image:
    """A case's clean image: its first file, or the synthetic scene for a built-in case."""
    if case.files:
        if data is None:
            raise ValueError(f"{case.name} needs the folder of the paper's images")
        return load_image(data / case.files[0])
    return from_array(synthetic_scene(long_side or 256, long_side or 256))


def prepare(case: Case, data: Path | None, long_side: int | None, seed: int = 0) -> dict[str, Any]:
    """Inputs of one case: (corrupted image, options, reference)."""
    first = _first(case, data, long_side)
    if case.task == "inpaint" and not case.files:
        clean = _resized(first, long_side)
        mask = dg.text_mask(clean.shape[0], clean.shape[1], seed)
        return {"image": clean * mask, "reference": clean, "options": {"mask": mask[..., 0]}}
    if case.task == "denoise":
        clean = _resized(first, long_side)
        return {"image": dg.add_noise(clean, 25, seed), "reference": clean, "options": {}}
    if case.task == "inpaint":
        clean = _resized(first, long_side)
        mask_img = PILImage.open(data / case.files[1]).convert("L")
        mask_img = mask_img.resize((clean.shape[1], clean.shape[0]), PILImage.Resampling.NEAREST)
        mask = (np.asarray(mask_img, np.float32) / 255 >= 0.5).astype(np.float32)[..., None]
        return {"image": clean * mask, "reference": clean, "options": {"mask": mask[..., 0]}}
    if case.task == "restore":
        clean = _resized(first, long_side)
        mask = dg.drop_mask(clean.shape[0], clean.shape[1], 0.5, seed)
        return {"image": clean * mask, "reference": clean, "options": {"mask": mask[..., 0]}}
    if case.task == "sr":
        f = case.factor
        clean = _resized(first, long_side, multiple=f)
        lr = dg.resize(clean, clean.shape[0] // f, clean.shape[1] // f, PILImage.Resampling.LANCZOS)
        return {"image": lr, "reference": clean, "options": {"factor": f}}
    return {"image": _resized(first, long_side), "reference": None, "options": {}}


def fit(
    case: Case, inputs: dict[str, Any], backend: str, device: str, seed: int, precision: str | None, **changes: Any
) -> Result:
    """One case's fit on its prepared inputs, scored as the paper scores it (the network's own output, no known
    pixels pasted back); `changes` are RunOptions fields (iters, keep, stop, ...). Ctrl-C stops the fit and
    raises KeyboardInterrupt: a truncated run is no measurement, and the rest stops too."""
    options = dict(inputs["options"])
    if "mask" in options:
        options["mask"] = (options["mask"] * 255).astype(np.uint8)
    if case.preset is not None:
        options["preset"] = case.preset
    result = restore(
        case.task, inputs["image"], backend=backend, device=device, reference=inputs["reference"], seed=seed,
        precision=precision, keep_known=False, **options, **changes,
    )  # fmt: skip
    if result.report["interrupted"]:
        raise KeyboardInterrupt
    return result


def row_of(case: Case, result: Result, seed: int, profile: str) -> dict[str, Any]:
    """A result file's row for one fit: what ran, its time and its PSNRs (None where the run had no reference)."""
    rep = result.report
    row = {
        "case": case.name,
        "task": case.task,
        "seed": seed,
        "backend": rep["backend"],
        "device": rep["device"],
        "precision": rep["precision"],
        "profile": profile,
        "size": rep["size"],
        "iters": rep["iters"],
        "seconds": rep["seconds"],
        "ms_per_iter": rep["ms_per_iter"],
        "paper_psnr": case.paper_psnr,
        "paper_note": case.paper_note,
        "summary": summary_line(rep),  # the line `dip run` prints for the same run
    }
    for key in ("psnr_input", "psnr", "psnr_ema", "best_psnr", "best_iter", "psnr_result", "ssim"):
        row[key] = rep.get(key)
    return row


def run_case(
    case: Case, backend: str, device: str, profile: str, data: Path | None, seed: int = 0, precision: str | None = None
) -> dict[str, Any]:
    spec = PROFILES[profile]
    inputs = prepare(case, data, spec["long_side"], seed)
    iters = spec["iters"].get(case.task)
    result = fit(case, inputs, backend, device, seed, precision, **({"iters": iters} if iters else {}))
    return row_of(case, result, seed, profile)


def run_quality(
    backends: list[str],
    device: str,
    profile: str,
    data: Path | None,
    cases: list[str] | None = None,
    on_row: Any = None,
    precision: str | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    """Every case x seed x backend (backends alternating, so drift hits them alike): the paper's cases with `data`,
    the built-in ones without; with several seeds, each case's mean and spread per backend and the MLX - torch
    difference with its 95 % interval."""
    rows = []
    for case in cases_for(data, cases):
        for seed in range(seeds):
            for backend in backends:
                row = run_case(case, backend, device, profile, data, seed=seed, precision=precision)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return {
        "kind": "quality",
        "profile": profile,
        "seeds": list(range(seeds)),
        "rows": rows,
        "mlx_minus_torch": _differences([r for r in rows if r["seed"] == 0]),
        **seed_statistics(rows),
    }


def cases_for(data: Path | None, names: list[str] | None = None) -> list[Case]:
    """The paper's cases when their images are at hand, else the built-in ones; `names` picks among all."""
    every = [*CASES, *BUILTIN_CASES]
    if names:
        return [c for c in every if c.name in names]
    return list(CASES if data is not None else BUILTIN_CASES)


def _differences(rows: list[dict[str, Any]]) -> dict[str, float]:
    by_case: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("psnr_result") is not None:
            by_case.setdefault(r["case"], {})[r["backend"]] = r["psnr_result"]
    return {c: v["mlx"] - v["torch"] for c, v in by_case.items() if "mlx" in v and "torch" in v}


def seed_statistics(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per case and backend: mean and standard deviation of the result's PSNR over seeds. Per case: MLX - torch,
    its 95 % interval, and whether the interval leaves out zero (a finding). Where both backends ran the same seeds
    the interval is paired over seeds (a seed fixes the corrupted input and the mask, shared by both backends; the
    trajectories then part within steps); otherwise Welch's, for two independent samples."""
    from scipy import stats

    by: dict[str, dict[str, dict[Any, float]]] = {}
    for k, r in enumerate(rows):
        if r.get("psnr_result") is not None:
            seed = r.get("seed", ("row", k))  # rows without a seed pair with nothing
            by.setdefault(r["case"], {}).setdefault(r["backend"], {})[seed] = float(r["psnr_result"])
    summary, differences = [], []
    for case, per_backend in by.items():
        for backend, by_seed in per_backend.items():
            values = list(by_seed.values())
            std = float(np.std(values, ddof=1)) if len(values) > 1 else None
            summary.append({"case": case, "backend": backend, "n": len(values), "mean": float(np.mean(values)),
                            "std": std})  # fmt: skip
        ma, mb = per_backend.get("mlx", {}), per_backend.get("torch", {})
        if len(ma) < 2 or len(mb) < 2:
            continue
        a, b = list(ma.values()), list(mb.values())
        diff = float(np.mean(a) - np.mean(b))
        if set(ma) == set(mb):
            d = [ma[s] - mb[s] for s in ma]
            se, dof, test = float(np.std(d, ddof=1) / np.sqrt(len(d))), len(d) - 1, "paired"
        else:
            va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
            se, test = float(np.sqrt(va + vb)), "welch"
            dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else 1
        half = float(stats.t.ppf(0.975, dof)) * se if se else 0.0
        differences.append({"case": case, "mlx_minus_torch": diff, "ci95": [diff - half, diff + half],
                            "n": [len(a), len(b)], "test": test,
                            "finding": bool(diff - half > 0 or diff + half < 0)})  # fmt: skip
    return {"summary": summary, "differences": differences}
