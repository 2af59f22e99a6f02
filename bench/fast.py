"""Time to quality: the Deep Random Projector (`--method drp`) against the paper's DIP, each as a user runs it.

    .venv/bin/python -m bench.fast [--size 64] [--seeds 3] [--backend mlx torch] [--case scene-denoise-s25 ...]
                                   [--max-iters 1000] [--out DIR]
    .venv/bin/python -m bench.fast --show RESULT.json
    .venv/bin/python -m bench.fast --picture docs/drp.png [--photo chelsea] [--size 128] [--backend mlx]
    .venv/bin/python -m bench.fast --sr-curves chelsea astronaut ... [--size 128] [--max-iters 1500] [--out DIR]

Every quick quality case (the project's synthetic scene: denoising at sigma 25, inpainting under a text mask,
super-resolution x4), for each seed and backend, runs twice with the default settings of its method: DIP and DRP,
each with its own automatic stop where the task has one. A task without one (inpainting) runs a fixed count: the
method's preset, capped at `--max-iters` for both, so that the two are compared at the same budget. Measured per
run: the wall time of the whole call (building the network and compiling included), the iterations, and the PSNR of
the output a user without a clean image gets (the automatic choice; for a fixed run, the last output). The table
gives, per case and backend, the means over seeds, DRP's time as a share of DIP's and its PSNR gap, against the
target of issue 23: within 0.5 dB of DIP in at most 1/5 of its time (denoising).

Methods alternate within a seed, so that drift of the machine hits both alike. Timings are this machine's, under
its load at the time: compare the two methods of one file, never files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.fingerprint import fingerprint, machine_label
from bench.fingerprint import slug as machine_slug
from bench.quality import BUILTIN_CASES, Case, fit, prepare
from dip_core.backend import available_backends
from dip_core.fit.rules import mean_recent_loss
from dip_core.problem.registry import spec_of
from dip_core.run.api import restore
from dip_core.run.report import Report
from dip_core.run.summary import summary_line
from dip_core.system.atomic import write_json
from dip_core.system.paths import bench_results_dir

METHODS = ("dip", "drp")
TIME_SHARE_TARGET = 0.2  # DRP's wall time at most this share of DIP's (denoising) ...
GAP_TARGET_DB = 0.5  # ... within this many dB of DIP's PSNR


def user_psnr(report: Report) -> float | None:
    """The PSNR of what a run without a reference returns: the automatic choice, else the last output (the EMA's
    when the run averages outputs)."""
    if report.get("psnr_auto") is not None:
        return report["psnr_auto"]
    if report.get("psnr_ema") is not None:
        return report["psnr_ema"]
    return report.get("psnr")


def run_one(case: Case, method: str, backend: str, size: int, seed: int, max_iters: int) -> dict[str, Any]:
    """One method on one case as a user runs it; its row."""
    inputs = prepare(case, None, size, seed)
    fixed = not spec_of(case.task).auto_stop
    started = time.perf_counter()
    result = fit(case, inputs, backend, "cpu", seed, None, method=method, **({"iters": max_iters} if fixed else {}))
    wall = time.perf_counter() - started
    rep = result.report
    return {
        "case": case.name,
        "task": case.task,
        "method": method,
        "backend": backend,
        "seed": seed,
        "size": rep["size"],
        "stop": "fixed" if fixed else "auto",
        "iters": rep["iters"],
        "stop_iter": rep.get("stop_iter"),
        "wall_seconds": wall,
        "fit_seconds": rep["seconds"],
        "ms_per_iter": rep["ms_per_iter"],
        "psnr_input": rep.get("psnr_input"),
        "psnr_user": user_psnr(rep),
        "psnr_best": rep.get("best_psnr"),
        "summary": summary_line(rep),
    }


def run(
    cases: list[Case], backends: list[str], size: int, seeds: int, max_iters: int, out: Path | None = None
) -> dict[str, Any]:
    """Every case x seed x backend x method; with `out`, the result so far is written there after every run (a
    run stopped part-way keeps what it measured, marked unfinished)."""
    rows: list[dict[str, Any]] = []
    data = {
        "kind": "fast",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint(),
        "settings": {"size": size, "seeds": seeds, "max_iters": max_iters, "device": "cpu"},
        "finished": False,
        "rows": rows,
    }
    for case in cases:
        for seed in range(seeds):
            for backend in backends:
                for method in METHODS:
                    row = run_one(case, method, backend, size, seed, max_iters)
                    rows.append(row)
                    print(
                        f"{case.name} {backend} {method} seed {seed}: {row['iters']} it, {row['wall_seconds']:.1f} s, "
                        f"{row['psnr_user']:.2f} dB (input {row['psnr_input']:.2f})",
                        flush=True,
                    )
                    if out is not None:
                        write_json(out, data)
    data["finished"] = True
    if out is not None:
        write_json(out, data)
    return data


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case and backend: each method's means over seeds, DRP's time share and PSNR gap, and the verdict."""
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["backend"]), {}).setdefault(r["method"], []).append(r)
    out = []
    for (case, backend), by in groups.items():
        if set(by) != set(METHODS):
            continue
        dip, drp = by["dip"], by["drp"]
        mean = {m: {k: statistics.fmean(r[k] for r in by[m]) for k in ("wall_seconds", "psnr_user", "iters")}
                for m in METHODS}  # fmt: skip
        shares = [b["wall_seconds"] / a["wall_seconds"] for a, b in zip(dip, drp, strict=True)]
        gaps = [b["psnr_user"] - a["psnr_user"] for a, b in zip(dip, drp, strict=True)]
        share, gap = statistics.fmean(shares), statistics.fmean(gaps)
        out.append({
            "case": case, "backend": backend, "task": dip[0]["task"], "seeds": len(dip), "stop": dip[0]["stop"],
            "dip": mean["dip"], "drp": mean["drp"], "time_share": share, "time_share_range": [min(shares), max(shares)],
            "gap_db": gap,
            "gap_sd": statistics.stdev(gaps) if len(gaps) > 1 else None,
            "psnr_input": statistics.fmean(r["psnr_input"] for r in dip),
            # The target is the denoising one; other tasks get their figures stated, not judged.
            "target_met": share <= TIME_SHARE_TARGET and gap >= -GAP_TARGET_DB if dip[0]["task"] == "denoise" else None,
        })  # fmt: skip
    return out


HEADERS = (
    "case", "backend", "stop", "input dB", "DIP: iters, s, dB", "DRP: iters, s, dB", "DRP time / DIP (range)",
    "DRP - DIP dB (± sd)", f"denoising target (<= {TIME_SHARE_TARGET:g} x time, >= -{GAP_TARGET_DB:g} dB)",
)  # fmt: skip


def table_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The side-by-side table's cells (one list per case and backend, in HEADERS' order): for this table and the
    chip table's."""
    out = []
    for g in summarise(rows):
        a, b = g["dip"], g["drp"]
        sd = f" ± {g['gap_sd']:.2f}" if g["gap_sd"] is not None else ""
        lo, hi = g["time_share_range"]
        out.append([
            g["case"], g["backend"], g["stop"], f"{g['psnr_input']:.2f}",
            f"{a['iters']:.0f}, {a['wall_seconds']:.1f}, {a['psnr_user']:.2f}",
            f"{b['iters']:.0f}, {b['wall_seconds']:.1f}, {b['psnr_user']:.2f}",
            f"{g['time_share']:.3f} ({lo:.3f}-{hi:.3f})", f"{g['gap_db']:+.2f}{sd}", _verdict(g["target_met"]),
        ])  # fmt: skip
    return out


def caption(data: dict[str, Any]) -> str:
    """Where, when and how a result was measured (one sentence or two)."""
    s = data["settings"]
    unfinished = "" if data.get("finished", True) else " Stopped part-way: only the runs listed were made."
    return (
        f"Measured on {machine_label(data['fingerprint'])}, {data['date'][:10]}, {s.get('device', 'cpu').upper()}; "
        f"{s['size']} px, {s['seeds']} seed(s); fixed runs capped at {s['max_iters']} iterations. PSNR: the output a "
        f"run without a reference returns; time: the whole call.{unfinished}"
    )


def markdown(data: dict[str, Any]) -> str:
    """The side-by-side table of a result."""
    lines = [caption(data), "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(data["rows"])]
    return "\n".join(lines)


def picture(path: Path, photo: str, size: int, backend: str, sigma: float = 25.0) -> None:
    """One photo (bench/photos.py: shipped by scikit-image) with Gaussian noise, denoised by DIP and by DRP with
    their default settings: input | DIP | DRP, each titled with its PSNR and iterations (the wall time is printed:
    a picture made beside other work would show a misleading one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.photos import load_photo
    from dip_core.problem.degrade import add_noise
    from dip_core.problem.metrics import psnr

    clean = load_photo(photo, size)
    noisy = add_noise(clean, sigma, 0)
    panels = [(noisy, f"input, sigma {sigma:g}: {psnr(noisy, clean):.2f} dB")]
    for method in METHODS:
        started = time.perf_counter()
        r = restore(
            "denoise", noisy, backend=backend, device="cpu", method=method
        )  # what a user without a reference gets
        wall = time.perf_counter() - started
        label = "DIP" if method == "dip" else "DRP (--method drp)"
        panels.append((r.pixels, f"{label}: {psnr(r.pixels, clean):.2f} dB, {r.report['iters']} iterations"))
        print(f"{method}: {panels[-1][1]}, {wall:.1f} s", flush=True)  # time: the table's job, on a quiet machine
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img.clip(0, 1), cmap="gray" if img.shape[2] == 1 else None)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{photo} {size}x{size}, {backend} on this machine's CPU, default settings, no reference", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def sr_curves(photos: list[str], size: int, iters: int, backend: str, out: Path) -> dict[str, Any]:
    """DRP's x4 super-resolution of each photo (Lanczos down to size/4) for a fixed `iters`: the loss and the PSNR
    against the clean photo at every step, from which its stopping level was chosen (`sr_stops`). Written after
    every photo."""
    from PIL import Image as PILImage

    from bench.photos import load_photo
    from dip_core.problem.degrade import resize

    data: dict[str, Any] = {"kind": "drp-sr-curves", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "fingerprint": fingerprint(), "settings": {"size": size, "iters": iters, "factor": 4,
                            "backend": backend, "threads": 1, "seed": 0}, "curves": []}  # fmt: skip
    for photo in photos:
        clean = load_photo(photo, size)
        low = resize(clean, size // 4, size // 4, PILImage.Resampling.LANCZOS)
        r = restore("sr", low, reference=clean, method="drp", factor=4, iters=iters, stop="fixed", backend=backend,
                    device="cpu", threads=1, seed=0)  # fmt: skip
        assert r.fit is not None
        data["curves"].append({"photo": photo, "loss": r.fit.loss_curve, "psnr": r.fit.psnr_curve})
        write_json(out, data)
        print(sr_stops(data)[-1], flush=True)
    return data


def sr_stops(data: dict[str, Any], level_db: float = 40.0) -> list[str]:
    """Per photo: where the fit level (the first mean of 20 losses at `level_db`) stops, and its PSNR against the
    best of the curve."""
    lines = []
    for c in data["curves"]:
        loss, db = c["loss"], c["psnr"]
        level = 10 ** (-level_db / 10)  # as the rule reads the loss: the mean of the last LOSS_WINDOW finite ones
        hit = next((i for i in range(1, len(loss) + 1) if mean_recent_loss(loss[:i]) <= level), None)
        best = max(range(len(db)), key=db.__getitem__)
        at = f"stops at {hit} ({db[hit - 1]:.2f} dB), {db[best] - db[hit - 1]:.2f} dB under" if hit else "never stops;"
        lines.append(f"{c['photo']}: {at} the best, {db[best]:.2f} dB at iteration {best + 1} of {len(db)}")
    return lines


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "missed")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="long side of the scene (px)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backend", nargs="+", choices=("mlx", "torch"), help="default: the installed ones")
    ap.add_argument("--case", nargs="+", choices=[c.name for c in BUILTIN_CASES], help="default: all")
    ap.add_argument("--max-iters", type=int, default=1000, help="the iterations of a run without automatic stop")
    ap.add_argument("--out", type=Path, help=f"folder for the result (default: {bench_results_dir()})")
    ap.add_argument("--show", type=Path, help="print the table of a recorded result instead of running")
    ap.add_argument("--picture", type=Path, help="write input | DIP | DRP on one photo to this PNG instead")
    ap.add_argument("--photo", default="chelsea", help="--picture: a photo of bench/photos.py")
    ap.add_argument("--sr-curves", nargs="+", metavar="PHOTO", help="record DRP's x4 sr curves of these photos")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.size < 16 or args.max_iters < 1:
        ap.error("--seeds and --max-iters must be >= 1 and --size >= 16")
    if args.sr_curves:
        backend = (args.backend or available_backends())[0]
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-drp-sr-curves-{machine_slug(machine_label(fingerprint()))}.json"
        sr_curves(args.sr_curves, args.size, args.max_iters, backend, (args.out or bench_results_dir()) / name)
        return
    if args.picture:
        picture(args.picture, args.photo, args.size, (args.backend or available_backends())[0])
        return
    if args.show:
        shown = json.loads(args.show.read_text())
        print("\n".join(sr_stops(shown)) if shown.get("kind") == "drp-sr-curves" else markdown(shown))
        return
    backends = args.backend or available_backends()
    cases = [c for c in BUILTIN_CASES if not args.case or c.name in args.case]
    folder = args.out or bench_results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-fast-{machine_slug(machine_label(fingerprint()))}.json"
    try:
        data = run(cases, backends, args.size, args.seeds, args.max_iters, out)
    except KeyboardInterrupt:
        print(f"stopped: the runs so far are in {out}", file=sys.stderr)
        raise SystemExit(130) from None
    print(markdown(data))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
