"""`dip bench paper`: the Deep Image Prior paper's experiments at its settings, beside its published numbers.

The paper is Ulyanov, Vedaldi and Lempitsky, "Deep Image Prior" (CVPR 2018; IJCV 2020). Each case is one of its
experiments on its image (named as in its code repository's `data/` folder), run with the paper code's preset
(dip_core/problem/presets.py) for the fixed number of iterations, and scored as the paper reports it: the output
after the last iteration (and its running average where the paper averages), never the best one seen. Every
figure names where its published number comes from, or says that the paper shows that experiment only as images.

A run is resumable: each finished (case, backend, seed) is kept in a state file beside the results, and a rerun
with the same settings skips it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from bench.quality import CASES as QUALITY_CASES
from bench.quality import PROFILES as QUALITY_PROFILES
from bench.quality import Case, fit, prepare, row_of
from dip_core.problem.metrics import psnr_y
from dip_core.problem.presets import preset_for
from dip_core.problem.registry import spec_of
from dip_core.system.atomic import write_json

PAPER = "Ulyanov, Vedaldi, Lempitsky, Deep Image Prior (CVPR 2018, IJCV 2020)"


@dataclass(frozen=True)
class Figure:
    """One number of a case: what we measure (a key of the case's row), and the paper's figure for it."""

    what: str  # the quantity and its metric, as the table says it
    key: str | None  # the row's key holding our value; None: nothing to measure (no ground truth)
    published: float | None  # the paper's number (dB); None where it has none for this
    source: str  # where the published number is, or why there is none


@dataclass(frozen=True)
class PaperCase:
    """One experiment of the paper: the inputs (a bench.quality Case), the paper's iteration count where its text
    states one other than its code's preset, and the figures the table shows."""

    case: Case
    figures: tuple[Figure, ...]
    iters: int | None = None  # None: the preset's

    @property
    def name(self) -> str:
        return self.case.name

    def paper_iters(self) -> int:
        """The iterations at the paper's settings."""
        return self.iters or preset_for(self.case.task, self.case.preset, self.case.factor).iters


def _quality_case(name: str) -> Case:
    return next(c for c in QUALITY_CASES if c.name == name)


VISUAL = "none: visual only (the paper shows this experiment as images)"
SR_NOTE = "zebra is one of Set14's images; no per-image figure is used here, so compare loosely"
CASES = (
    PaperCase(
        _quality_case("f16-denoise-s25"),
        (
            Figure("output after the last iteration, RGB PSNR", "psnr", 29.22,
                   "paper, denoising: mean over 9 colour images after 1800 steps (no per-image F16 figure)"),
            Figure("running average of the outputs (EMA 0.99), RGB PSNR", "psnr_ema", 30.43,
                   "paper, denoising: the same 9 images with the outputs averaged"),
        ),
        iters=1800,
    ),
    PaperCase(
        _quality_case("kate-inpaint"), (Figure("output after the last iteration, RGB PSNR", "psnr", None, VISUAL),)
    ),
    PaperCase(
        Case("vase-inpaint", "inpaint", ("vase.png", "vase_mask.png"), None, "paper: visual only",
             preset="inpaint-hole"),
        (Figure("output after the last iteration (meshgrid input), RGB PSNR", "psnr", None, VISUAL),),
    ),
    PaperCase(
        Case("library-inpaint", "inpaint", ("library.png", "library_mask.png"), None, "paper: visual only",
             preset="inpaint-region"),
        (Figure("output after the last iteration, RGB PSNR", "psnr", None, VISUAL),),
    ),
    PaperCase(
        _quality_case("barbara-restore-50"),
        (Figure("output after the last iteration, PSNR (grey)", "psnr", 32.22,
                "paper Table 1: 50 % missing pixels, Barbara"),),
    ),
    PaperCase(
        _quality_case("zebra-sr4"),
        (
            Figure("output after the last iteration, RGB PSNR (ours)", "psnr", None, "none: the paper scores Y"),
            Figure("output after the last iteration, Y PSNR, border 4 cropped (paper's metric)", "psnr_y", 27.00,
                   f"paper, super-resolution x4: Set14 mean; {SR_NOTE}"),
            Figure("bicubic upscaling, Y PSNR, border 4 cropped", "bicubic_psnr_y", 26.05,
                   "paper, super-resolution x4: bicubic, Set14 mean"),
        ),
    ),
    PaperCase(
        Case("zebra-sr8", "sr", ("zebra_GT.png",), None, "paper: Set5 / Set14 means (Y channel)", factor=8),
        (
            Figure("output after the last iteration, RGB PSNR (ours)", "psnr", None, "none: the paper scores Y"),
            Figure("output after the last iteration, Y PSNR, border 8 cropped (paper's metric)", "psnr_y", None,
                   "none here: the paper gives x8 Set5 / Set14 means only, not transcribed"),
        ),
    ),
    PaperCase(_quality_case("snail-dejpeg"), (Figure("no ground truth", None, None, VISUAL + "; no ground truth"),)),
)  # fmt: skip
CASE_NAMES = tuple(c.name for c in CASES)


class ProfileName(str, Enum):
    QUICK = "quick"
    PAPER = "paper"
    SMOKE = "smoke"


@dataclass(frozen=True)
class Profile:
    """How close to the paper a run is: the image's long side and the iterations per task."""

    name: str
    long_side: int | None  # None: the image as it is
    iters: dict[str, int] | None  # per task; None: the paper's (PaperCase.paper_iters)
    note: str  # what the table says about the settings


def _shrunk(name: str, note: str) -> Profile:
    """A profile of bench/quality.py's (its size and iterations), marked as not the paper's settings."""
    spec = QUALITY_PROFILES[name]
    return Profile(name, spec["long_side"], dict(spec["iters"]), note)


PROFILES = {
    "quick": _shrunk(
        "quick",
        "NOT the paper's settings: images downscaled to a {long_side}-pixel long side and {iters} iterations, so that "
        "a 2-core CPU runs every case in minutes; the published numbers are for full size and full iteration counts",
    ),
    "paper": Profile("paper", None, None, "the paper's settings: full-size images, the paper's iteration counts"),
    "smoke": _shrunk("smoke", "NOT the paper's settings: the test suite's smoke run, numbers meaningless"),
}


def profile_note(profile: Profile) -> str:
    if profile.iters is None:
        return profile.note
    counts = sorted(set(profile.iters.values()))
    iters = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0])
    return profile.note.format(long_side=profile.long_side, iters=iters)


def iters_for(case: PaperCase, profile: Profile) -> int:
    return case.paper_iters() if profile.iters is None else profile.iters[case.case.task]


def missing_files(case: PaperCase, data: Path) -> list[str]:
    """The case's files that are not in `data` (a case is skipped when any is missing)."""
    return [f for f in case.case.files if not (data / f).is_file()]


@dataclass(frozen=True)
class Job:
    """One fit: a case on a backend with a seed, and its cost in pixel-iterations (the progress bar's unit)."""

    case: PaperCase
    backend: str
    seed: int
    work: float

    @property
    def key(self) -> str:
        return f"{self.case.name}/{self.backend}/{self.seed}"


def run_job(job: Job, profile: Profile, data: Path, device: str, precision: str | None) -> dict[str, Any]:
    """One fit at the profile's settings, scored as the paper scores it: the row of the result file."""
    case = job.case.case
    inputs = prepare(case, data, profile.long_side, job.seed)
    result = fit(case, inputs, job.backend, device, job.seed, precision, iters=iters_for(job.case, profile),
                 keep="last", stop="fixed")  # fmt: skip
    row = row_of(case, result, job.seed, profile.name)
    if case.task == "sr" and inputs["reference"] is not None:
        from dip_core.run.prepare import bicubic_baseline

        ref = inputs["reference"]
        row["psnr_y"] = psnr_y(result.pixels, ref, case.factor)
        row["bicubic_psnr_y"] = psnr_y(bicubic_baseline(result.problem), ref, case.factor)
    row["preset"] = case.preset or spec_of(case.task).default_preset(case.factor if case.task == "sr" else None)
    row["figures"] = [
        {"what": f.what, "ours": row.get(f.key) if f.key else None, "published": f.published, "source": f.source}
        for f in job.case.figures
    ]
    return row


class PaperRun:
    """The jobs of one `dip bench paper`, their state file (finished jobs, kept across reruns with the same
    settings) and the result file in bench/schema.py's shape."""

    def __init__(self, profile: Profile, cases: list[PaperCase], backends: list[str], seeds: int, data: Path,
                 device: str, precision: str | None, folder: Path, command: str) -> None:  # fmt: skip
        self.profile, self.data, self.device, self.precision = profile, data, device, precision
        self.folder = folder
        self.settings = {
            "profile": profile.name,
            "long_side": profile.long_side,
            "device": device,
            "precision": precision or "default",
        }
        self.skipped: list[dict[str, str]] = []
        runnable = []
        for case in cases:
            missing = missing_files(case, data)
            if missing:
                self.skipped.append({"case": case.name, "reason": f"{', '.join(missing)} not in {data}"})
            else:
                runnable.append(case)
        self.jobs = [Job(c, b, s, self._work(c)) for c in runnable for s in range(seeds) for b in backends]
        self.state_path = folder / f"paper-{profile.name}.state"
        self.rows: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        self.date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.command, self.backends, self.seeds = command, backends, seeds
        self._load_state()

    def _work(self, case: PaperCase) -> float:
        from PIL import Image as PILImage

        with PILImage.open(self.data / case.case.files[0]) as im:
            w, h = im.size
        if self.profile.long_side is not None and max(w, h) > self.profile.long_side:
            scale = self.profile.long_side / max(w, h)
            w, h = w * scale, h * scale
        return float(w * h * iters_for(case, self.profile))

    def _load_state(self) -> None:
        """Finished jobs of an earlier run with the same settings (another settings' state is started afresh)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if state.get("settings") != self.settings:
            return
        self.date = state.get("date", self.date)
        wanted = {j.key for j in self.jobs}
        self.rows = {k: r for k, r in state.get("rows", {}).items() if k in wanted}
        self.resumed = len(self.rows)

    def pending(self) -> list[Job]:
        return [j for j in self.jobs if j.key not in self.rows]

    def run(self, on_job: Callable[[Job, dict[str, Any] | None], None] | None = None) -> None:
        """Every pending job in turn; the state is saved after each, so Ctrl-C keeps what finished."""
        for job in self.pending():
            if on_job is not None:
                on_job(job, None)
            row = run_job(job, self.profile, self.data, self.device, self.precision)
            self.rows[job.key] = row
            write_json(self.state_path, {"settings": self.settings, "date": self.date, "rows": self.rows})
            if on_job is not None:
                on_job(job, row)

    @property
    def finished(self) -> bool:
        return not self.pending()

    def ordered_rows(self) -> list[dict[str, Any]]:
        return [self.rows[j.key] for j in self.jobs if j.key in self.rows]

    def result(self) -> dict[str, Any]:
        """The result file (kind "machine", bench/schema.py's version) with the paper's table as its `paper`."""
        from bench.machine import machine_result

        settings = {**self.settings, "seeds": self.seeds, "backends": self.backends}
        return {
            **machine_result(self.date, self.command, settings),
            "finished": self.finished,
            "paper": {
                "profile": self.profile.name,
                "paper_settings": self.profile.iters is None,
                "note": profile_note(self.profile),
                "source": PAPER,
                "rows": [
                    {**r, "device": "cpu" if r["device"] == "cpu" else "gpu", "device_name": r["device"]}
                    for r in self.ordered_rows()
                ],
                "skipped": self.skipped,
            },
        }

    def result_path(self, machine_slug: str) -> Path:
        stamp = self.date.replace(":", "").replace("-", "")[:15]
        return self.folder / f"{stamp}-paper-{machine_slug}.json"
