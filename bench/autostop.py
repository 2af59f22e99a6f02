"""Measure the automatic stop: how far its choice falls short of the best output, and how long it runs on.

    .venv/bin/python -m bench.autostop run [--data DIR_OF_THE_PAPERS_IMAGES] [--max-iters 3000] [--out DIR]
    .venv/bin/python -m bench.autostop run --set photos --sizes 96 --seeds 1 [--claims DIR]   # the test set
    .venv/bin/python -m bench.autostop table bench/results/*-autostop-*.json [--rows test] [--rules 1000 default]
    .venv/bin/python -m bench.autostop pictures bench/results/*-autostop-*.json [--count 3]
    .venv/bin/python -m bench.autostop pair --before OLD.json ... --after NEW.json ... [--save PATH]

`run` fits every case once with the task's paper preset (capped at --max-iters),
tracking the windowed output variance (W=100) and the PSNR of the candidate
output against the clean image at every step; the curves go to a JSON file in
your per-user results folder (dip_core.system.paths; `--out bench/results` adds it to the repository's).
`table` then replays stopping rules on those curves, side by side, exactly as
`fit` applies them: the default rule, and the fixed-patience rule for any P.
It prints the gap to the best PSNR of the recording, the iterations run after
the chosen one, and their spread over the seeds of a case.
Denoising's noise level is estimated from the input as a run does (or, with
`--noise given`, the true one, as with `dip run --noise-sigma`).

Two sets. The tuning set, on which rules were fitted: the cases below, on the paper's images (`--data`) and the
project's synthetic scene. The test set (`--set photos`, bench/photos.py): 20 photos that scikit-image and
matplotlib ship, never used to fit anything; `table --rows test` reports on it alone, and `--save PATH` writes the
table and its figures (tests/fit/test_stopping_study.py replays the committed curves against them). `pictures` reruns
the test set's worst cases under the default rule and shows its choice beside the best output. `pair` compares two
recordings of the same cases (same seed and backend: the same trajectory, another average of outputs, as
`--ema-warmup` makes): the default rule's choice in each, in dB, and its gap to the best output of either.

Cases (`--set first`): every reference case of `dip bench quality --profile quick` (denoise,
inpaint, restore, sr; inpainting runs a fixed count by default, measured for
comparison), and images degraded here: the synthetic scene at sigma 15/25/50,
F16 at 15/50, and, held out from the choice of the fixed-patience rule's discrepancy threshold,
kate at 25, barbara at 15, zebra at 25 (64x64). `--set wide` adds noise from 5 to 75 and another image;
`--seeds` repeats a set with other draws of the noise and of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from bench.fingerprint import fingerprint, machine_label
from bench.fingerprint import slug as machine_slug
from bench.photos import case_by_name, photo_cases
from bench.quality import CASES, prepare
from bench.replay import replay as replay_decisions
from dip_core.fit.rules import EmaCentre, ema_lag
from dip_core.fit.settings import FitSettings
from dip_core.problem.degrade import add_noise
from dip_core.problem.examples import synthetic_scene
from dip_core.problem.metrics import discrepancy_sigma, noise_sigma_estimate, noise_sigma_global
from dip_core.run.api import restore
from dip_core.run.prepare import resolve_preset
from dip_core.system.atomic import write_json, write_text
from dip_core.system.paths import bench_results_dir

WINDOW = 100
# Images degraded here, and their noise levels. kate, barbara and zebra were added after the
# discrepancy check's threshold was chosen on the others: they test it on cases it was not fitted to.
NOISE_LEVELS = {"scene": (15, 25, 50), "f16": (15, 50), "kate": (25,), "barbara": (15,), "zebra": (25,)}
DEGRADED_IMAGES = {
    "f16": "F16_GT.png", "kate": "kate.png", "barbara": "barbara.png", "zebra": "zebra_GT.png", "vase": "vase.png",
}  # fmt: skip
HELD_OUT = ("kate-denoise-s25", "barbara-denoise-s15", "zebra-denoise-s25")
# The second set (`--set wide`), recorded for the choice of a rule that stops sooner: noise from 5 to 75, an
# image in neither set before (vase), and the reference cases again; run with other seeds than the first.
WIDE_NOISE_LEVELS = {"f16": (5, 35, 75), "kate": (5, 35, 75), "vase": (10, 25, 50), "scene": (25,)}
WIDE_REFERENCE_CASES = ("kate-inpaint", "zebra-sr4", "barbara-restore-50")


def case_seed(name: str) -> int:
    """The seed in a case's name (`...@2`); 0 where none is given."""
    return int(name.rsplit("@", 1)[1]) if "@" in name else 0


def _cases(data: Path, size: int, seed: int = 0, wide: bool = False) -> list[dict[str, Any]]:
    """The cases of a set at one seed (the noise's draw and the run's); names carry a seed other than 0."""
    tag = f"@{seed}" if seed else ""
    cases: list[dict[str, Any]] = []
    for case in CASES:
        if wide and case.name not in WIDE_REFERENCE_CASES:
            continue
        if case.task != "jpeg" and all((data / f).exists() for f in case.files):
            inputs = prepare(case, data, size, seed=seed)
            options = dict(inputs["options"])
            if "mask" in options:
                options["mask"] = (options["mask"] * 255).astype(np.uint8)
            cases.append({"name": case.name + tag, "task": case.task, **inputs, "options": options})
    clean = {"scene": synthetic_scene(size, size)}
    for name, file in DEGRADED_IMAGES.items():
        if (data / file).exists():
            im = PILImage.open(data / file).convert("RGB").resize((size, size), PILImage.Resampling.LANCZOS)
            clean[name] = np.asarray(im, np.float32) / 255
    levels = WIDE_NOISE_LEVELS if wide else NOISE_LEVELS
    for name, img in clean.items():
        for sigma in levels.get(name, ()):
            cases.append(
                {
                    "name": f"{name}-denoise-s{sigma}{tag}",
                    "task": "denoise",
                    "image": add_noise(img, sigma, seed),
                    "reference": img,
                    "options": {},
                }
            )
    return cases


_FIRST_SET_NAMES = {f"{n}-denoise-s{s}" for n, levels in NOISE_LEVELS.items() for s in levels} | {c.name for c in CASES}


def _photo_cases(seeds: list[int], sizes: list[int], backend: str | None) -> list[dict[str, Any]]:
    """The test set (bench.photos): each case on its assigned backend, or only those assigned `backend`."""
    cases = []
    for seed in seeds:
        for size in sizes:
            for c in photo_cases(seed, size):
                if backend in (None, c.backend):
                    clean, noisy = c.pair()
                    cases.append({"name": c.name, "task": "denoise", "image": noisy, "reference": clean,
                                  "options": {}, "backend": c.backend, "sigma": c.sigma, "set": "test"})  # fmt: skip
    return cases


def _claim(folder: Path, name: str) -> bool:
    """Take a case for this worker: the first to create its marker file has it (workers sharing a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / name).open("x").close()
    except FileExistsError:
        return False
    return True


def run(args: argparse.Namespace) -> None:
    rows = []
    started = time.strftime("%Y%m%dT%H%M%S")
    fp = fingerprint()
    slug = machine_slug(machine_label(fp))
    folder = args.out or bench_results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{started}-autostop-{slug}.json"
    if args.set == "photos":
        cases = _photo_cases(args.seeds, args.sizes or [args.size], args.backend)
    else:
        cases = [c for seed in args.seeds for c in _cases(args.data, args.size, seed, args.set == "wide")]
    for case in cases:
        if args.only and case["name"] not in args.only:
            continue
        if args.claims is not None and not _claim(args.claims, case["name"]):
            continue  # another worker has it
        seed = case_seed(case["name"])
        preset = resolve_preset(case["task"], factor=case["options"].get("factor"))
        preset_iters = preset.iters
        iters = min(preset_iters, args.max_iters)
        if args.short is not None and case.get("sigma", 0) > args.short[0]:
            iters = min(iters, args.short[1])  # high noise: the best comes early (a shorter recording)
        backend = case.get("backend", args.backend or "torch")
        # net(z)'s PSNR at every step (one more forward) only where it is the candidate: runs without EMA.
        ema = preset.exp_weight > 0
        r = restore(
            case["task"], case["image"], backend=backend, device="cpu", reference=case["reference"],
            iters=iters, stop="auto", window=WINDOW, patience=iters + 1, seed=seed, trace_output=not ema,
            keep_known=False, threads=args.threads, **case["options"],
        )  # fmt: skip
        rep = r.report
        row = {
            "case": case["name"],
            "task": case["task"],
            "size": rep["size"],
            "preset_iters": preset_iters,
            "iters": rep["iters"],
            "seed": seed,
            "backend": rep["backend"],
            "ema": ema,
            "exp_weight": rep["preset"]["exp_weight"],
            "ema_warmup": rep["preset"].get("ema_warmup", 0),  # absent: the paper's EMA (before dip 0.5)
            "seconds": rep["seconds"],
            "rollbacks": rep["rollbacks"],
            "loss_curve": rep["loss_curve"],
            # What a run returns at a given step: the EMA when on, else net(z) (no input noise).
            "candidate_psnr": rep["psnr_ema_curve"] if ema else rep["psnr_output_curve"],
            "noisy_psnr": rep["psnr_curve"],  # net(z + noise), the output the step was computed from
            "best_psnr": rep["best_psnr"],
            "final_psnr": rep["psnr_ema"] if ema else rep["psnr"],
            "variance_curve": rep["variance_curve"],
            "noise_sigma": rep["stopping"]["noise_sigma"] / 255 if "noise_sigma" in rep["stopping"] else None,
        }
        if "sigma" in case:  # the photos: the true level (the run's estimate is `noise_sigma`) and their set
            row["sigma"] = case["sigma"]
            row["set"] = case["set"]
        rows.append(row)
        best = rep["best_psnr"]
        print(f"{case['name']}: {rep['iters']} it in {rep['seconds']:.0f} s, best {best:.2f} dB", flush=True)
        write_json(out, {"kind": "autostop", "window": WINDOW, "fingerprint": fp, "rows": rows})
    print(f"wrote {out}")


def replay(
    row: dict[str, Any], patience: int | None, noise_sigma: float | None = None, window: int = WINDOW, **changes: Any
) -> dict[str, Any]:
    """Where `fit`'s auto stop would have ended this run, and the PSNR of the output it would have returned.

    The decisions are the stopping rules' own (bench.replay), made on the run's recorded losses and variances: with a
    `patience`, the fixed-patience rule (ES-WMV, and with a noise level the discrepancy point that replaces a
    variance point deep in noise fitting); with None, the default rule. *gap* is measured against the best
    PSNR at any step of the whole recording, so a rule that stops before the best loses what it missed;
    *after* counts the iterations run after the chosen one.
    """
    settings = FitSettings(
        iters=len(row["loss_curve"]), patience=patience, stop="auto", window=window,
        noise_power=None if noise_sigma is None else noise_sigma**2,
        exp_weight=row["exp_weight"] if row["ema"] else 0.0, ema_warmup=row.get("ema_warmup", 0) if row["ema"] else 0,
        **changes,
    )  # fmt: skip
    stop_at, stopping = replay_decisions(settings, row["loss_curve"], row["variance_curve"])
    chosen_at, rule = stopping.choice()
    lag = EmaCentre(ema_lag(row["exp_weight"]), settings.ema_warmup).lag_at(chosen_at) if row["ema"] else 0
    psnrs = row["candidate_psnr"]
    # The PSNR curves skip rolled-back (non-finite) steps like the variance does; the best
    # seen is over the returned candidate (the EMA when on) and the noisy-input output alike.
    finite = [i + 1 for i, x in enumerate(row["loss_curve"]) if math.isfinite(x)]
    by_iter = dict(zip(finite, psnrs, strict=True))
    end = len(finite) if stop_at is None else finite.index(stop_at) + 1
    best_seen = max(max(psnrs[:end]), max(row["noisy_psnr"][:end]))
    best = max(max(psnrs), max(row["noisy_psnr"]))
    if rule == "discrepancy":
        auto = by_iter[chosen_at + lag]
    elif chosen_at and lag and chosen_at + lag in by_iter and chosen_at + lag <= finite[end - 1]:
        auto = by_iter[chosen_at + lag]  # fit returns the EMA centred on the minimum
    else:
        auto = by_iter[chosen_at] if chosen_at else psnrs[-1]
    return {
        "rule": rule,
        "detected": chosen_at or None,
        "stopped": stop_at,
        "auto": auto,
        "best_seen": best_seen,
        "best": best,
        "gap": best - auto,
        # Against the best of what the run returns at a step (the average when on): the choice's own error, without
        # what the average loses early on to the outputs it still carries from the start.
        "choice_gap": max(psnrs) - auto,
        "after": (stop_at or len(row["loss_curve"])) - (chosen_at or len(row["loss_curve"])),
        "allowance": max(300.0, 0.3 * (chosen_at or len(row["loss_curve"]))),
        "fixed": row["final_psnr"],
        "auto_minus_fixed": auto - row["final_psnr"],
    }


NOISE_SOURCES = {"estimated": noise_sigma_estimate, "global": noise_sigma_global}


def noise_levels(rows: list[dict[str, Any]], data: Path | None, noise: str = "estimated") -> dict[str, float | None]:
    """The noise level `restore` uses for each denoising case, from its input made again: estimated with today's
    estimator ("estimated") or dip 0.3's, which read the whole image ("global"), or, as with --noise-sigma, the
    true one where the image holds no less ("given": `discrepancy_sigma`). The level a run recorded is the
    estimate of its day; the curves do not depend on it: the runs never stop early."""
    estimate = NOISE_SOURCES.get(noise, noise_sigma_estimate)
    levels: dict[str, float | None] = {}
    cases: dict[tuple[int, bool], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["task"] != "denoise":
            levels[row["case"]] = None
            continue
        if row["case"].startswith("photo-"):  # the photos are remade from the packages that ship them
            noisy = case_by_name(row["case"]).noisy()
        else:
            if data is None:
                raise SystemExit(f"{row['case']}: the paper's images are needed (--data) to remake its input")
            seed, wide = case_seed(row["case"]), row["case"].split("@")[0] not in _FIRST_SET_NAMES
            key = (seed, wide)
            if key not in cases:
                cases[key] = {c["name"]: c for c in _cases(data, max(row["size"]), seed, wide)}
            noisy = cases[key][row["case"]]["image"]
        given = true_sigma(row["case"]) / 255 if noise == "given" else None
        levels[row["case"]] = discrepancy_sigma(noisy, given) if given is not None else estimate(noisy)
    return levels


def true_sigma(name: str) -> int:
    """The noise level in a denoising case's name ("f16-denoise-s25@1", "photo-moon-s75-96@2")."""
    return int(name.split("@")[0].rsplit("-s", 1)[1].split("-")[0])


def split_rule(rule: str, noise: str) -> tuple[str, str]:
    """A rule as named on the command line, and the noise level it replays with: its own after a colon
    ("default:global"), else the table's `noise`."""
    name, _, source = rule.partition(":")
    if source and source not in ("estimated", "global", "given"):
        raise SystemExit(f"{rule}: the noise level after ':' is estimated, global or given")
    return name, source or noise


def rule_name(rule: str) -> str:
    rule, _, source = rule.partition(":")
    if source:
        return f"{rule_name(rule)} ({'dip 0.3 noise estimate' if source == 'global' else source + ' noise level'})"
    if rule == "default":
        return "default rule"
    if rule == "wmv":
        return "ES-WMV, short patience"
    if rule.startswith("ratio="):
        return f"noise level x {rule.split('=')[1]}"
    return f"fixed patience P={rule}"


def replay_rule(row: dict[str, Any], rule: str, noise_sigma: float | None) -> dict[str, Any]:
    """`replay` under a rule named as on the command line: "default", "wmv" (the default rule without a noise
    level: ES-WMV with the short patience), "ratio=R" (the default rule with loss ratio R) or a fixed patience."""
    if rule == "default":
        return replay(row, None, noise_sigma)
    if rule == "wmv":
        return replay(row, None, None)
    if rule.startswith("ratio="):
        return replay(row, None, noise_sigma, loss_ratio=float(rule.split("=")[1]))
    return replay(row, int(rule), noise_sigma)


def _spread(values: list[float], digits: int = 2) -> str:
    """Mean ± sample standard deviation."""
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def load_rows(files: list[Path], which: str = "all") -> list[dict[str, Any]]:
    """The recorded rows of `files`, one per case and backend (a later file's row wins): all of them, only the
    test set's (the photos no rule was fitted on) or only the others (the tuning set)."""
    docs = [json.loads(f.read_text()) for f in files]
    rows = list({(row["case"], row.get("backend")): row for doc in docs for row in doc["rows"]}.values())
    if which == "test":
        return [row for row in rows if row.get("set") == "test"]
    if which == "tuning":
        return [row for row in rows if row.get("set") != "test"]
    return rows


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One rule's figures over a set of replays, with the targets of the stopping study."""
    gaps, after = [r["gap"] for r in results], [r["after"] for r in results]
    return {
        "cases": len(results),
        "mean_gap": float(np.mean(gaps)),
        "mean_choice_gap": float(np.mean([r["choice_gap"] for r in results])),
        "max_gap": float(np.max(gaps)),
        "over_0.5": sum(g > 0.5 for g in gaps),
        "over_0.6": sum(g > 0.6 for g in gaps),
        "mean_after": float(np.mean(after)),
        "mean_allowance": float(np.mean([r["allowance"] for r in results])),
        "over_allowance": sum(r["after"] > r["allowance"] for r in results),
    }


def table(args: argparse.Namespace) -> None:
    rows = load_rows(args.files, args.rows)
    marked_files = {n.resolve() for n in args.new or []}
    new_files = [f for f in args.files if f.resolve() in marked_files]
    new = {(r["case"], r.get("backend")) for r in load_rows(new_files)}
    rules = {rule: split_rule(rule, args.noise) for rule in args.rules}
    by_source = {source: noise_levels(rows, args.data, source) for source in {s for _, s in rules.values()}}
    levels = by_source.get(args.noise) or noise_levels(rows, args.data, args.noise)
    results = {
        rule: [replay_rule(row, name, by_source[source][row["case"]]) for row in rows]
        for rule, (name, source) in rules.items()
    }
    out = [f"W={WINDOW}, noise level {args.noise}; gap: best PSNR at any step of the recording - the auto choice's"]
    header = " | ".join(f"{rule_name(rule)}: stop / chosen (rule), after, gap dB" for rule in args.rules)
    out += [f"\n| case | backend | size | sigma / estimate | iters | best dB | {header} |"]
    out += ["|---|---|---|---|---|---|" + "---|" * len(args.rules)]
    for k, row in enumerate(rows):
        cells = []
        for rule in args.rules:
            r = results[rule][k]
            cells.append(f"{r['stopped'] or 'none'} / {r['detected']} ({r['rule']}), {r['after']}, {r['gap']:.2f}")
        name = row["case"] + (" (held out)" if row["case"] in HELD_OUT else "")
        name += " (new)" if (row["case"], row.get("backend")) in new else ""
        level = levels[row["case"]]
        sigma = f"{true_sigma(row['case'])} / {255 * level:.1f}" if level is not None else "-"
        out.append(
            f"| {name} | {row.get('backend', 'torch')} | {row['size'][1]}x{row['size'][0]} | {sigma} "
            f"| {row['iters']} | {results[args.rules[0]][k]['best']:.2f} | " + " | ".join(cells) + " |"
        )  # fmt: skip
    out += ["\n| rule | cases | mean gap dB | max gap dB | mean gap to the best average dB "
            "| cases > 0.5 dB | cases > 0.6 dB | mean after "
            "| mean allowance | after > allowance | per seed: mean gap / mean after "
            "| per size: mean gap (cases) |"]  # fmt: skip
    out += ["|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seeds = sorted({case_seed(row["case"]) for row in rows})
    sizes = sorted({max(row["size"]) for row in rows})
    summary: dict[str, Any] = {"rows": args.rows, "noise": args.noise, "rules": {}}
    for rule in args.rules:
        rs = results[rule]
        figures = summarise(rs)
        per_seed = []
        for seed in seeds:
            at_seed = summarise([rs[k] for k, row in enumerate(rows) if case_seed(row["case"]) == seed])
            figures[f"seed_{seed}"] = at_seed
            per_seed.append(f"{seed}: {at_seed['mean_gap']:.2f} / {at_seed['mean_after']:.0f}")
        per_size = []
        for size in sizes:
            at_size = summarise([rs[k] for k, row in enumerate(rows) if max(row["size"]) == size])
            figures[f"size_{size}"] = at_size
            per_size.append(f"{size}: {at_size['mean_gap']:.2f} ({at_size['cases']})")
        summary["rules"][rule] = figures
        out.append(
            f"| {rule_name(rule)} | {figures['cases']} | {figures['mean_gap']:.2f} | {figures['max_gap']:.2f} "
            f"| {figures['mean_choice_gap']:.2f} | {figures['over_0.5']} | {figures['over_0.6']} "
            f"| {figures['mean_after']:.0f} "
            f"| {figures['mean_allowance']:.0f} | {figures['over_allowance']} | {'; '.join(per_seed)} "
            f"| {'; '.join(per_size)} |"
        )
        marked = [rs[k] for k, row in enumerate(rows) if (row["case"], row.get("backend")) in new]
        if marked:
            m = summarise(marked)
            out.append(
                f"| {rule_name(rule)}, new rows only | {m['cases']} | {m['mean_gap']:.2f} | {m['max_gap']:.2f} "
                f"| {m['mean_choice_gap']:.2f} | {m['over_0.5']} | {m['over_0.6']} | {m['mean_after']:.0f} "
                f"| {m['mean_allowance']:.0f} "
                f"| {m['over_allowance']} | | |"
            )
    families: dict[str, list[int]] = {}
    for k, row in enumerate(rows):
        families.setdefault(row["case"].split("@")[0], []).append(k)
    several = {name: ks for name, ks in families.items() if len(ks) > 1}
    if several:
        out += ["\nSeed spread (mean ± standard deviation over the seeds of each case):\n"]
        out += ["| case | seeds | " + " | ".join(f"{rule_name(rule)}: gap dB, after" for rule in args.rules) + " |"]
        out += ["|---|---|" + "---|" * len(args.rules)]
        for name, ks in several.items():
            cells = []
            for rule in args.rules:
                gaps, after = [results[rule][k]["gap"] for k in ks], [results[rule][k]["after"] for k in ks]
                cells.append(f"{_spread(gaps)}, {_spread(after, 0)}")
            out.append(f"| {name} | {len(ks)} | " + " | ".join(cells) + " |")
    text = "\n".join(out)
    print(text)
    if args.save is not None:
        command = "python -m bench.autostop " + " ".join(sys.argv[1:])
        summary["command"] = command
        summary["files"] = [str(f) for f in args.files]
        summary["cases"] = {row["case"] + "/" + row.get("backend", "torch"): {
            rule: {k: results[rule][i][k] for k in ("rule", "detected", "stopped", "gap", "after")}
            for rule in args.rules} for i, row in enumerate(rows)}  # fmt: skip
        write_json(args.save.with_suffix(".json"), summary)
        write_text(args.save.with_suffix(".md"), f"Made by `{command}`\n\n{text}\n")
        print(f"wrote {args.save.with_suffix('.md')} and {args.save.with_suffix('.json')}")


def pair(args: argparse.Namespace) -> None:
    """The default rule on two recordings of each case found in both (`--before`, `--after`): the PSNR it returns
    in each, the change, and each one's gap to the best output of either recording (what either average could
    have given)."""
    before = {(r["case"], r.get("backend")): r for r in load_rows(args.before, args.rows)}
    after = [r for r in load_rows(args.after, args.rows) if (r["case"], r.get("backend")) in before]
    if not after:
        raise SystemExit("error: no case is recorded in both sets")
    levels = noise_levels(after, args.data)
    out = ["| case | backend | before: chosen, dB | after: chosen, dB | change dB | gap to the best of both: "
           "before / after dB |", "|---|---|---|---|---|---|"]  # fmt: skip
    cases = {}
    for row in after:
        old = before[(row["case"], row.get("backend"))]
        a, b = replay_rule(old, "default", levels[row["case"]]), replay_rule(row, "default", levels[row["case"]])
        best = max(a["best"], b["best"])
        key = f"{row['case']}/{row.get('backend', 'torch')}"
        cases[key] = {"before": a["auto"], "after": b["auto"], "gap_before": best - a["auto"],
                              "gap_after": best - b["auto"], "chosen_before": a["detected"],
                              "chosen_after": b["detected"]}  # fmt: skip
        c = cases[key]
        out.append(
            f"| {row['case']} | {row.get('backend', 'torch')} | {a['detected']}, {a['auto']:.2f} "
            f"| {b['detected']}, {b['auto']:.2f} | {b['auto'] - a['auto']:+.2f} "
            f"| {c['gap_before']:.2f} / {c['gap_after']:.2f} |"
        )
    values = list(cases.values())
    figures = {k: float(np.mean([c[k] for c in values])) for k in ("gap_before", "gap_after")}
    figures["change"] = float(np.mean([c["after"] - c["before"] for c in values]))
    figures["over_0.6"] = [sum(c[k] > 0.6 for c in values) for k in ("gap_before", "gap_after")]
    out.append(
        f"\n{len(values)} cases: the choice changes by {figures['change']:+.2f} dB on average; its mean gap to the "
        f"best of both recordings is {figures['gap_before']:.2f} dB before, {figures['gap_after']:.2f} after "
        f"(cases over 0.6 dB: {figures['over_0.6'][0]} before, {figures['over_0.6'][1]} after)."
    )
    text = "\n".join(out)
    print(text)
    if args.save is not None:
        command = "python -m bench.autostop " + " ".join(sys.argv[1:])
        summary = {"command": command, "before": [str(f) for f in args.before], "after": [str(f) for f in args.after],
                   "figures": figures, "cases": cases}  # fmt: skip
        write_json(args.save.with_suffix(".json"), summary)
        write_text(args.save.with_suffix(".md"), f"Made by `{command}`\n\n{text}\n")
        print(f"wrote {args.save.with_suffix('.md')} and {args.save.with_suffix('.json')}")


def pictures(args: argparse.Namespace) -> None:
    """Rerun the test set's worst cases (one per photo) under the default rule and show what it returns beside the
    best output of the recording, remade by a second run stopped at that iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dip_core.problem.metrics import psnr
    from dip_core.run.plot import show

    rows = load_rows(args.files, "test")
    levels = noise_levels(rows, None)
    replays = sorted(
        ((replay_rule(row, "default", levels[row["case"]]), row) for row in rows), key=lambda x: -x[0]["gap"]
    )
    worst: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for replayed, row in replays:
        if len(worst) < args.count and all(case_by_name(row["case"]).photo != case_by_name(r["case"]).photo
                                           for _, r in worst):  # fmt: skip
            worst.append((replayed, row))
    fig, axes = plt.subplots(len(worst), 4, figsize=(10, 2.7 * len(worst)), constrained_layout=True, squeeze=False)
    for ax, (replayed, row) in zip(axes, worst, strict=True):
        case = case_by_name(row["case"])
        clean, noisy = case.pair()
        common = {"backend": row["backend"], "device": "cpu", "reference": clean, "seed": case.seed,
                  "threads": args.threads}  # fmt: skip
        chosen = restore("denoise", noisy, stop="auto", **common)
        rep, auto = chosen.report, chosen.fit.auto if chosen.fit is not None else None
        if auto is None:
            continue
        best_iter = int(np.argmax(row["candidate_psnr"])) + 1  # what a run returns there (its average when on)
        best = restore("denoise", noisy, stop="fixed", iters=best_iter, keep="last", **common)
        best_db = psnr(best.pixels, clean)
        rerun = f"chose {rep['stop_iter']} ({rep['psnr_auto']:.2f} dB), best {best_iter} ({best_db:.2f} dB)"
        print(f"{row['case']}: replayed gap {replayed['gap']:.2f} dB; rerun: {rerun}")
        show(ax[0], noisy, f"{case.photo}, sigma {case.sigma}: {psnr(noisy, clean):.2f} dB")
        show(ax[1], auto, f"dip's choice, it. {rep['stop_iter']}: {rep['psnr_auto']:.2f} dB")
        show(ax[2], best.pixels, f"best, it. {best_iter}: {best_db:.2f} dB")
        show(ax[3], clean, "clean")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", type=Path, help="the paper's test images (the first and wide sets)")
    r.add_argument("--backend", default=None, help="default torch; with --set photos: only its cases")
    r.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    r.add_argument("--sizes", type=int, nargs="*", help="--set photos: image sides (default --size)")
    r.add_argument("--size", type=int, default=64, help="long side of the images")
    r.add_argument("--max-iters", type=int, default=3000)
    r.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the noise and the run")
    r.add_argument("--set", choices=("first", "wide", "photos"), default="first", help="which cases (docstring)")
    r.add_argument("--only", nargs="*", help="case names")
    r.add_argument("--short", type=int, nargs=2, metavar=("SIGMA", "ITERS"), help="photos: ITERS above SIGMA")
    r.add_argument("--claims", type=Path, help="a folder shared by workers: each case runs in one of them")
    r.add_argument("--out", type=Path, help=f"folder for the curves (default: {bench_results_dir()})")
    t = sub.add_parser("table")
    t.add_argument("files", type=Path, nargs="+")
    t.add_argument("--data", type=Path, help="the paper's test images, to remake the first and wide sets' inputs")
    t.add_argument("--rows", choices=("all", "test", "tuning"), default="all", help="which recorded cases")
    t.add_argument("--save", type=Path, help="also write the table to this path as .md and its figures as .json")
    t.add_argument(
        "--noise", choices=("estimated", "global", "given"), default="estimated",
        help="denoising's noise level: dip's estimate, dip 0.3's (from every patch) or the true one",
    )  # fmt: skip
    t.add_argument("--new", type=Path, nargs="*", help="of the files, those recorded after a rule was chosen: marked")
    t.add_argument(
        "--rules", nargs="+", default=["1000", "default"],
        help="stopping rules to replay side by side: 'default' (dip's default), 'wmv', 'ratio=R' or a fixed "
        "patience P; ':global' or ':given' after one replays it with dip 0.3's noise estimate or the true level",
    )  # fmt: skip
    p = sub.add_parser("pictures")
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--count", type=int, default=3, help="how many of the worst test-set cases")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("docs/stopping-worst.png"))
    c = sub.add_parser("pair")
    c.add_argument("--before", type=Path, nargs="+", required=True, help="the earlier recordings")
    c.add_argument("--after", type=Path, nargs="+", required=True, help="the same cases recorded again")
    c.add_argument("--rows", choices=("all", "test", "tuning"), default="test", help="which recorded cases")
    c.add_argument("--data", type=Path, help="the paper's test images (tuning rows)")
    c.add_argument("--save", type=Path, help="also write the table to this path as .md and its figures as .json")
    args = ap.parse_args()
    {"run": run, "table": table, "pictures": pictures, "pair": pair}[args.cmd](args)


if __name__ == "__main__":
    main()
