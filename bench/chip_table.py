"""The chip table: many machines' results merged into one row per machine x backend x device, as Markdown and as a
static HTML page (inline CSS, plots inlined as SVG; no server, no network, no script).

Results of one machine (same label) are merged, but a row's cells of one kind come from one run only: its speeds
from the latest file that timed that backend and device (every size of that file, none from older ones: sizes timed
by different code must not share a row), its quality PSNR from the latest quality run, its sustained run from the
latest one. A version-0 speed file and a version-0 quality file of one machine still fill one row, and the row says
when (and at which commit) each group of cells was measured.
"""

from __future__ import annotations

import html
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import fast, paper_table
from bench.fingerprint import machine_label
from bench.peaks import peak_gflops
from bench.schema import LoadedResult
from dip_core.system.atomic import atomic_write

TITLE = "dip benchmark: chip table"


@dataclass(frozen=True)
class ChipRow:
    """One machine x backend x device: the step and loop ms/iter per image side and what follows from them."""

    machine: str
    backend: str
    device: str
    precision: str
    step_ms: dict[int, float]
    loop_ms: dict[int, float]
    mlx_over_torch: dict[int, float]  # step, same machine and device: below 1, MLX is faster
    peak_percent: dict[int, float]  # the step's GFLOP/s as a % of the FP32 peak
    peak_gflops: float | None
    peak_source: str
    peak_memory_bytes: int | None
    psnr: float | None  # mean result PSNR over this backend's quality runs
    psnr_runs: int
    sustained: tuple[float, float] | None  # ms/iter in the first and the last minute
    findings: tuple[str, ...]
    measured: str = "-"  # when (and at which commit) each group of cells was measured


@dataclass(frozen=True)
class MachineInfo:
    """What the page says about one machine: its merged description and the files it came from."""

    label: str
    machine: dict[str, Any]
    software: dict[str, Any]
    settings: dict[str, Any]
    dates: tuple[str, ...]
    files: tuple[str, ...]
    interrupted: tuple[str, ...]
    crosscheck: dict[str, Any] | None
    skipped: tuple[dict[str, Any], ...]
    quality_profile: str | None
    findings: tuple[dict[str, Any], ...]
    sustained: tuple[dict[str, Any], ...] = ()  # the sustained runs: samples of [elapsed s, ms/iter]
    paper: dict[str, Any] | None = None  # the latest `dip bench paper` run: its `paper` section, date and command


@dataclass(frozen=True)
class FastRun:
    """A machine's latest `python -m bench.fast` result (DRP against DIP, time to quality), ready to show."""

    label: str
    date: str
    file: str
    caption: str
    cells: tuple[tuple[str, ...], ...]  # rows of bench.fast.HEADERS


@dataclass(frozen=True)
class ChipTable:
    rows: tuple[ChipRow, ...]
    machines: tuple[MachineInfo, ...]
    files: tuple[tuple[str, int], ...]  # every good file and its schema version
    problems: tuple[str, ...]
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # column -> the sizes it has values for
    fast: tuple[FastRun, ...] = ()  # one per machine that has one, by label


# --- merging -------------------------------------------------------------------------------------------------------


def _is_finding(d: dict[str, Any]) -> bool:
    """A quality difference whose 95 % interval leaves out zero (the file's own verdict when it has no interval)."""
    ci = d.get("ci95")
    if ci:
        return ci[0] > 0 or ci[1] < 0
    return bool(d.get("finding"))


def _finding_text(d: dict[str, Any]) -> str:
    ci = d.get("ci95")
    interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
    return f"{d['case']} {d['mlx_minus_torch']:+.2f} dB{interval}"


def _merge(results: list[LoadedResult]) -> dict[str, Any]:
    """One machine's results, oldest first, folded into one: later values over earlier ones."""
    machine: dict[str, Any] = {}
    software: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    matmul: dict[str, float] = {}
    speed_runs: dict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = {}  # (backend, device) -> its last run
    quality = crosscheck = paper = None
    quality_run = "-"
    sustained: dict[tuple[str, str], dict[str, Any]] = {}
    sustained_runs: dict[tuple[str, str], str] = {}
    skipped: list[dict[str, Any]] = []
    interrupted = []
    for res in results:
        d = res.data
        machine.update({k: v for k, v in d["machine"].items() if v is not None})
        software.update({k: v for k, v in d["software"].items() if v is not None})
        if d["speed"] or d["quality"] or d["sustained"] or d["crosscheck"]:  # a paper-only run's settings are its own
            settings.update({k: v for k, v in d["settings"].items() if v is not None})
        matmul.update(d["matmul_gflops"])
        run = _run_of(d)
        for pair in {(r["backend"], r["device"]) for r in d["speed"]}:
            # every size of this run, with its own matmul rates (a measured peak is compared within one run); an
            # older run's sizes are dropped, not mixed in
            mine = [r for r in d["speed"] if (r["backend"], r["device"]) == pair]
            speed_runs[pair] = (run, [{**r, "_matmul": d["matmul_gflops"], "_run": run} for r in mine])
        if d["quality"]:
            quality, quality_run = d["quality"], run
        crosscheck = d["crosscheck"] or crosscheck
        if d.get("paper"):
            paper = {**d["paper"], "_date": d["date"], "_command": d["command"]}
        if d["sustained"]:
            key = (d["sustained"]["backend"], d["sustained"]["device"])
            sustained[key], sustained_runs[key] = d["sustained"], run
        skipped += d["skipped"]
        if not d["finished"]:
            interrupted.append(str(res.path))
    speed = {(r["backend"], r["device"], r["kind"], r["size"]): r for _, rows in speed_runs.values() for r in rows}
    return {
        "machine": machine,
        "software": software,
        "settings": settings,
        "matmul": matmul,
        "speed": speed,
        "quality": quality,
        "crosscheck": crosscheck,
        "sustained": sustained,
        "skipped": skipped,
        "interrupted": interrupted,
        "paper": paper,
        "runs": {"speed": {k: run for k, (run, _) in speed_runs.items()}, "quality": quality_run,
                 "sustained": sustained_runs},
    }  # fmt: skip


def _run_of(d: dict[str, Any]) -> str:
    """When a result file was measured, and at which dip commit: `2026-11-24 (2bee0cc+dirty)`."""
    commit = d["software"].get("commit")
    return f"{str(d['date'])[:10]}" + (f" ({commit})" if commit else "")


def _rows(label: str, m: dict[str, Any]) -> list[ChipRow]:
    quality = m["quality"]
    q_rows = quality["rows"] if quality else []
    findings = tuple(_finding_text(d) for d in (quality["differences"] if quality else []) if _is_finding(d))
    q_devices = {r["device"] for r in q_rows}
    pairs = {(b, d) for (b, d, _, _) in m["speed"]} | {(r["backend"], r["device"]) for r in q_rows if r["device"]}
    step = {k: r for k, r in m["speed"].items() if k[2] == "step"}
    rows = []
    for backend, device in sorted(pairs, key=lambda p: (p[1] != "gpu", p[1], p[0])):
        mine = [r for (b, d, _, _), r in m["speed"].items() if (b, d) == (backend, device)]
        steps = {r["size"]: r for r in mine if r["kind"] == "step"}
        peak, source = peak_gflops(m["machine"], backend, device, m["matmul"])
        percent = {}
        for size, r in steps.items():
            own, _ = peak_gflops(m["machine"], backend, device, r["_matmul"])
            if own and r["gflops_per_s"] is not None:
                percent[size] = 100 * r["gflops_per_s"] / own
        ratio = {}
        for (b, d, _, size), r in step.items():
            other = step.get(("torch", d, "step", size))
            if d == device and b == "mlx" and other is not None and other["_run"] == r["_run"]:  # one run's ratio
                ratio[size] = r["ms_per_iter"] / other["ms_per_iter"]
        psnrs = [
            r["psnr_result"]
            for r in q_rows
            if r["backend"] == backend and r["device"] in (device, None) and r["psnr_result"] is not None
        ]
        memory = [r["peak_memory_bytes"] for r in steps.values() if r["peak_memory_bytes"] is not None]
        sus = m["sustained"].get((backend, device))
        sustained = None
        if sus and sus["first_minute_ms"] is not None and sus["last_minute_ms"] is not None:
            sustained = (sus["first_minute_ms"], sus["last_minute_ms"])
        precisions = sorted({r["precision"] for r in mine if r["precision"]})
        runs = m["runs"]
        measured = []
        if (backend, device) in runs["speed"]:
            measured.append(f"speed {runs['speed'][(backend, device)]}")
        if psnrs:
            measured.append(f"quality {runs['quality']}")
        if sustained is not None:
            measured.append(f"sustained {runs['sustained'][(backend, device)]}")
        rows.append(
            ChipRow(
                machine=label,
                backend=backend,
                device=device,
                precision="/".join(precisions) or m["settings"].get("precision") or "-",
                step_ms={s: r["ms_per_iter"] for s, r in sorted(steps.items())},
                loop_ms={
                    r["size"]: r["ms_per_iter"] for r in sorted(mine, key=lambda r: r["size"]) if r["kind"] == "loop"
                },
                mlx_over_torch=dict(sorted(ratio.items())),
                peak_percent=dict(sorted(percent.items())),
                peak_gflops=peak,
                peak_source=source,
                peak_memory_bytes=max(memory) if memory else None,
                psnr=statistics.fmean(psnrs) if psnrs else None,
                psnr_runs=len(psnrs),
                sustained=sustained,
                findings=findings if device in q_devices else (),
                measured="; ".join(measured) or "-",
            )
        )
    return rows


def fast_runs(found: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[list[FastRun], list[str]]:
    """Each machine's latest time-to-quality result (one run's rows, never merged across runs), and one problem
    line per file that is not one this dip can read."""
    latest: dict[str, FastRun] = {}
    problems = []
    for path, data in found:
        try:
            run = FastRun(
                label=machine_label(data["fingerprint"]),
                date=str(data["date"]),
                file=str(path),
                caption=fast.caption(data),
                cells=tuple(tuple(c) for c in fast.table_cells(data["rows"])),
            )
        except (KeyError, TypeError, ValueError, AttributeError, statistics.StatisticsError):
            problems.append(f"{path}: not a bench.fast result this dip can read")
            continue
        if run.label not in latest or (run.date, run.file) > (latest[run.label].date, latest[run.label].file):
            latest[run.label] = run
    return [latest[k] for k in sorted(latest)], problems


def build(
    results: Sequence[LoadedResult],
    problems: Sequence[str] = (),
    fast_results: Sequence[tuple[Path, dict[str, Any]]] = (),
) -> ChipTable:
    """The chip table of these results (merged per machine label), with each machine's latest time-to-quality
    result, listing the files and the problems given."""
    by_label: dict[str, list[LoadedResult]] = {}
    for res in sorted(results, key=lambda r: (r.data["date"], str(r.path))):
        by_label.setdefault(res.data["machine"]["label"], []).append(res)
    rows: list[ChipRow] = []
    machines = []
    for label in sorted(by_label):
        group = by_label[label]
        m = _merge(group)
        rows += _rows(label, m)
        quality = m["quality"]
        machines.append(
            MachineInfo(
                label=label,
                machine=m["machine"],
                software=m["software"],
                settings=m["settings"],
                dates=tuple(r.data["date"] for r in group),
                files=tuple(str(r.path) for r in group),
                interrupted=tuple(m["interrupted"]),
                crosscheck=m["crosscheck"],
                skipped=tuple(m["skipped"]),
                quality_profile=quality["profile"] if quality else None,
                findings=tuple(d for d in (quality["differences"] if quality else []) if _is_finding(d)),
                sustained=tuple(m["sustained"].values()),
                paper=m["paper"],
            )
        )
    sizes = {
        "step": tuple(sorted({s for r in rows for s in r.step_ms})),
        "loop": tuple(sorted({s for r in rows for s in r.loop_ms})),
        "ratio": tuple(sorted({s for r in rows for s in r.mlx_over_torch})),
        "peak": tuple(sorted({s for r in rows for s in r.peak_percent})),
    }
    files = tuple((str(r.path), r.version) for r in results)
    fast_table, fast_problems = fast_runs(fast_results)
    return ChipTable(tuple(rows), tuple(machines), files, (*problems, *fast_problems), sizes, tuple(fast_table))


# --- cells ---------------------------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 1000 else (f"{x:.1f}" if x >= 10 else f"{x:.2f}")


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f} %" if x < 10 else f"{x:.0f} %"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


# Columns with a value per image side: data-col prefix, the group's header.
PER_SIZE = (("step", "step ms/iter"), ("loop", "loop ms/iter"), ("ratio", "MLX / torch"), ("peak", "% of FP32 peak"))
SINGLE = (
    ("peak-gflops", "FP32 peak GFLOP/s"),
    ("peak-source", "peak from"),
    ("memory", "peak memory"),
    ("psnr", "quality PSNR (mean dB, runs)"),
    ("sustained", "sustained ms/iter, first → last minute"),
    ("findings", "MLX - torch findings"),
    ("measured", "measured (date, commit)"),
)
FIRST = (("machine", "machine"), ("backend", "backend"), ("device", "device"), ("precision", "precision"))


def _columns(table: ChipTable) -> list[tuple[str, str]]:
    """(data-col key, header) of every column, in order (the Markdown table: one table, GitHub scrolls it)."""
    cols = list(FIRST)
    for key, header in PER_SIZE:
        cols += [(f"{key}-{s}", f"{header} {s}²") for s in table.sizes.get(key, ())]
    return cols + list(SINGLE)


# The page shows the columns in two tables of one row per machine x backend x device, so that each fits a
# 1280-pixel window (one table of every column was 25 columns wide): the times, then the rest.
PAGE_TABLES = (
    ("chip-table", FIRST, ("step", "loop", "ratio"), ()),
    ("chip-details", FIRST[:3], ("peak",), SINGLE),
)


def _page_columns(table: ChipTable, first: Any, per_size: Any, single: Any) -> list[tuple[str, str]]:
    cols = list(first)
    for key, header in PER_SIZE:
        if key in per_size:
            cols += [(f"{key}-{s}", f"{header} {s}²") for s in table.sizes.get(key, ())]
    return cols + list(single)


def _html_head(table: ChipTable, first: Any, per_size: Any, single: Any) -> str:
    """Two header rows: the per-size columns grouped under one header, their sizes below it."""
    top = [f'<th rowspan="2" data-col="{k}">{_e(h)}</th>' for k, h in first]
    sub = []
    for key, header in PER_SIZE:
        sizes = table.sizes.get(key, ())
        if key in per_size and sizes:
            top.append(f'<th colspan="{len(sizes)}" class="group">{_e(header)}</th>')
            sub += [f'<th data-col="{key}-{s}">{s}²</th>' for s in sizes]
    top += [f'<th rowspan="2" data-col="{k}">{_e(h)}</th>' for k, h in single]
    return f"<tr>{''.join(top)}</tr>\n<tr>{''.join(sub)}</tr>"


def _html_table(table: ChipTable, name: str, first: Any, per_size: Any, single: Any) -> str:
    cols = _page_columns(table, first, per_size, single)
    body = []
    for row in table.rows:
        cells = _cells(row, table)
        tds = "".join(f'<td data-col="{_e(k)}">{_e(cells[k])}</td>' for k, _ in cols)
        body.append(
            f'<tr class="row" data-machine="{_e(row.machine)}" data-backend="{_e(row.backend)}" '
            f'data-device="{_e(row.device)}">{tds}</tr>'
        )
    return (
        f'<div class="scroll">\n<table id="{name}">\n<thead>\n{_html_head(table, first, per_size, single)}\n'
        f"</thead>\n<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>\n</div>"
    )


def missing_vendors(table: ChipTable) -> str | None:
    """A plain sentence when the table has no Apple or no NVIDIA row yet (None when it has both)."""
    described = [
        " ".join(str(v) for v in (i.label, i.machine.get("cpu"), i.machine.get("gpu")) if v) for i in table.machines
    ]
    missing = [v for v in ("Apple", "NVIDIA") if not any(v.lower() in text.lower() for text in described)]
    if not missing:
        return None
    rows = " and no ".join(f"{v} row" for v in missing)
    return f"The table has no {rows} yet (dip bench all on such a machine adds one)."


def _cells(row: ChipRow, table: ChipTable) -> dict[str, str]:
    cells = {"machine": row.machine, "backend": row.backend, "device": row.device, "precision": row.precision}
    for s in table.sizes.get("step", ()):
        cells[f"step-{s}"] = _ms(row.step_ms.get(s))
    for s in table.sizes.get("loop", ()):
        cells[f"loop-{s}"] = _ms(row.loop_ms.get(s))
    for s in table.sizes.get("ratio", ()):
        cells[f"ratio-{s}"] = "-" if s not in row.mlx_over_torch else f"{row.mlx_over_torch[s]:.2f}"
    for s in table.sizes.get("peak", ()):
        cells[f"peak-{s}"] = _pct(row.peak_percent.get(s))
    cells["peak-gflops"] = "-" if row.peak_gflops is None else f"{row.peak_gflops:,.0f}"
    cells["peak-source"] = row.peak_source if row.peak_gflops is not None else "-"
    cells["memory"] = _bytes(row.peak_memory_bytes)
    cells["psnr"] = "-" if row.psnr is None else f"{row.psnr:.2f} ({row.psnr_runs})"
    if row.sustained is None:
        cells["sustained"] = "-"
    else:
        first, last = row.sustained
        cells["sustained"] = f"{_ms(first)} → {_ms(last)} ({100 * (last / first - 1):+.0f} %)"
    cells["findings"] = "; ".join(row.findings) or "-"
    cells["measured"] = row.measured
    return cells


NOTES = (
    "ms/iter: the median of timed blocks; step: the optimisation step alone (forward, loss, backward, Adam), "
    "loop: `dip run`'s loop around it.",
    "MLX / torch: the step's ms/iter on the same machine and device; below 1, MLX is faster.",
    "% of FP32 peak: the step's GFLOP/s (FLOPs of direct convolution, forward and both gradients) over the chip's "
    "FP32 peak. 'table: …' is a known GPU (bench/peaks.py: vendor datasheet, or Apple GPU cores x 128 ALUs x 2 x "
    "clock); 'measured matmul' is the fp32 matmul rate measured on that device in the same run (CPUs, unknown GPUs).",
    "quality PSNR: the mean result PSNR over this backend's quality runs (every case and seed); findings: MLX - torch "
    "differences whose 95 % interval leaves out zero.",
)


def _machine_lines(info: MachineInfo) -> list[str]:
    """Plain-text facts about one machine, one per line."""
    m, sw, st = info.machine, info.software, info.settings
    gpu = m.get("gpu") or "no GPU"
    if m.get("gpu_cores"):
        gpu += f" ({m['gpu_cores']} cores)"
    if m.get("gpu_driver"):
        gpu += f", driver {m['gpu_driver']}"
    memory = f"{m['memory_gib']} GiB" if m.get("memory_gib") is not None else "? GiB"
    lines = [
        f"CPU {m.get('cpu') or '?'} ({m.get('cores') or '?'} cores), {gpu}, {memory}, {m.get('os') or '?'} "
        f"{m.get('arch') or ''}".rstrip()
        + (f", {m['power_source']}" if m.get("power_source") else ""),
    ]
    blas = sw.get("blas") or {}
    blas_text = ", ".join(f"{k} {str(v).split(' (')[0]}" for k, v in blas.items() if v) or "-"
    lines.append(
        f"dip {sw.get('dip') or '(version not recorded)'} @ {sw.get('commit') or '?'}, "
        f"Python {sw.get('python') or '?'}, "
        f"MLX {sw.get('mlx') or '-'}, torch {sw.get('torch') or '-'}, BLAS {blas_text}"
    )
    if st:
        lines.append("settings: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    if info.quality_profile:
        lines.append(f"quality runs: profile {info.quality_profile}")
    if info.crosscheck:
        lines.append(f"MLX/torch cross-check on {info.crosscheck.get('device') or '?'}: {_verdict(info.crosscheck)}")
    for s in info.skipped:
        size = f" {s['size']}²" if s.get("size") else ""
        lines.append(f"skipped {s['backend']}/{s['device']}{size}: {s['reason']}")
    for f in info.interrupted:
        lines.append(f"interrupted run (what finished is shown): {f}")
    lines.append("measured " + ", ".join(d[:10] for d in info.dates if d) + " — " + ", ".join(info.files))
    return lines


def _verdict(crosscheck: dict[str, Any]) -> str:
    """The cross-check's verdict in `dip crosscheck`'s own words (a file without one: agree or not, as recorded)."""
    from dip_core.run.crosscheck import verdict_text

    if crosscheck.get("verdict"):
        return verdict_text(crosscheck["verdict"], crosscheck.get("excess"))
    return "the backends agree (no finer verdict recorded)" if crosscheck["passed"] else "the backends disagree"


FAST_TITLE = "DRP against DIP: time to quality"
FAST_INTRO = (
    "`--method drp` (the Deep Random Projector) against the paper's DIP, each with its own automatic stop, per "
    "machine: its latest `python -m bench.fast` run (one run's rows, never merged)."
)
FAST_NONE = "None recorded: `python -m bench.fast --out DIR` on a machine adds its table."


def _fast_html(table: ChipTable) -> str:
    if not table.fast:
        return f"<p>{_e(FAST_NONE)}</p>"
    parts = []
    head = "".join(f"<th>{_e(h)}</th>" for h in fast.HEADERS)
    for run in table.fast:
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>" for cells in run.cells)
        parts.append(
            f"<h3>{_e(run.label)}</h3>\n<p>{_e(run.caption)} File: <code>{_e(run.file)}</code>.</p>\n"
            f'<div class="scroll"><table class="fast-table" data-machine="{_e(run.label)}"><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>"
        )
    return "\n".join(parts)


# --- Markdown ------------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(table: ChipTable) -> str:
    """The chip table, the findings, the machines, the files read and the files skipped, as Markdown."""
    cols = _columns(table)
    out = [f"# {TITLE}", ""]
    out.append(f"{len(table.machines)} machines, {len(table.rows)} rows, from {len(table.files)} files.")
    vendors = missing_vendors(table)
    if vendors:
        out += ["", f"**{vendors}**"]
    out += ["", "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in table.rows:
        cells = _cells(row, table)
        out.append("| " + " | ".join(_md(cells[k]) for k, _ in cols) + " |")
    out += [""] + [f"- {n}" for n in NOTES]
    out += ["", "## MLX - torch quality findings", ""]
    findings = [(i.label, d) for i in table.machines for d in i.findings]
    if findings:
        out += ["| machine | case | MLX - torch (dB) | 95 % interval |", "|---|---|---|---|"]
        for label, d in findings:
            ci = d.get("ci95")
            interval = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-"
            out.append(f"| {_md(label)} | {_md(d['case'])} | {d['mlx_minus_torch']:+.2f} | {interval} |")
    else:
        out.append("None: no difference's 95 % interval leaves out zero.")
    out += ["", f"## {FAST_TITLE}", "", FAST_INTRO, ""]
    for run in table.fast:
        out += [f"### {_md(run.label)}", "", f"{_md(run.caption)} File: `{run.file}`.", ""]
        out += ["| " + " | ".join(_md(h) for h in fast.HEADERS) + " |", "|" + "---|" * len(fast.HEADERS)]
        out += ["| " + " | ".join(_md(c) for c in cells) + " |" for cells in run.cells] + [""]
    if not table.fast:
        out += [FAST_NONE, ""]
    out.pop()  # the blank line after the section: the next one brings its own
    for info in table.machines:
        if info.paper:
            p = info.paper
            out += ["", paper_table.markdown(p, info.label, p["_date"], p["_command"], level=2).rstrip("\n")]
    out += ["", "## Machines", ""]
    for info in table.machines:
        out.append(f"- **{info.label}**")
        out += [f"  - {line}" for line in _machine_lines(info)]
    out += ["", "## Files read", ""] + [f"- `{f}` (schema version {v})" for f, v in table.files]
    out += ["", "## Files skipped", ""]
    out += [f"- {p}" for p in table.problems] if table.problems else ["None."]
    return "\n".join(out) + "\n"


# --- plots ---------------------------------------------------------------------------------------------------------


def _svg(fig: Any, salt: str) -> str:
    """A matplotlib figure as an inline <svg> element (its ids salted so that two plots on one page never clash)."""
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def speed_svg(table: ChipTable) -> str:
    """ms/iter against image side, log-log, one panel per machine, one line per backend/device/kind."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, NullFormatter

    timed = {r.machine for r in table.rows if r.step_ms or r.loop_ms}
    labels = [i.label for i in table.machines if i.label in timed]
    ncols = max(1, min(len(labels), 2))
    nrows = max(1, -(-len(labels) // ncols))
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(labels) :]:
        ax.set_axis_off()
    if not labels:
        axes[0][0].text(0.5, 0.5, "no speed rows", ha="center", va="center")
    for ax, label in zip(axes.flat, labels, strict=False):
        for row in (r for r in table.rows if r.machine == label):
            for kind, points, style in (("step", row.step_ms, "-"), ("loop", row.loop_ms, "--")):
                if points:
                    xs = sorted(points)
                    ax.loglog(xs, [points[x] for x in xs], style, marker="o",
                              label=f"{row.backend}/{row.device} {kind}")  # fmt: skip
        sides = sorted({s for r in table.rows if r.machine == label for s in (*r.step_ms, *r.loop_ms)})
        ax.set_xticks(sides, [str(s) for s in sides])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("image side (pixels)", fontsize=8)
        ax.set_ylabel("ms per iteration", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return _svg(fig, "dip-chip-table-speed")


def ratio_svg(table: ChipTable) -> str:
    """MLX / torch step ms/iter per machine and device: bars per image side, a line at 1."""
    from matplotlib.figure import Figure

    groups = [(r.machine, r.device, r.mlx_over_torch) for r in table.rows if r.backend == "mlx" and r.mlx_over_torch]
    sizes = sorted({s for _, _, ratios in groups for s in ratios})
    fig = Figure(figsize=(max(5.5, 1.6 * len(groups) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    if not groups:
        ax.text(0.5, 0.5, "no machine has both MLX and torch rows", ha="center", va="center")
        ax.set_axis_off()
    width = 0.8 / max(len(sizes), 1)
    for j, size in enumerate(sizes):
        xs = [i + j * width for i, (_, _, ratios) in enumerate(groups) if size in ratios]
        ax.bar(xs, [ratios[size] for _, _, ratios in groups if size in ratios], width, label=f"{size}²")
    if groups:
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(
            [i + (len(sizes) - 1) * width / 2 for i in range(len(groups))],
            [f"{m}\n{d}" for m, d, _ in groups],
            fontsize=7,
        )
        ax.set_ylabel("MLX ms / torch ms (below 1: MLX faster)", fontsize=8)
        ax.legend(fontsize=7, title="image side", title_fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("MLX / torch, optimisation step", fontsize=9)
    return _svg(fig, "dip-chip-table-ratio")


def sustained_svg(table: ChipTable) -> str:
    """ms/iter against elapsed time of each sustained run (a machine that heats up slows down)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for info in table.machines:
        for run in info.sustained:
            if run.get("samples"):
                t, ms = zip(*run["samples"], strict=True)
                ax.plot(t, ms, label=f"{info.label} · {run['backend']}/{run['device']} {run.get('size', '?')}²")
    ax.set_xlabel("elapsed (s)", fontsize=8)
    ax.set_ylabel("ms per iteration", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title("Sustained runs", fontsize=9)
    return _svg(fig, "dip-chip-table-sustained")


# --- HTML ----------------------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #d0d0d5; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f5; white-space: normal; text-align: center; vertical-align: bottom; }
th.group { border-bottom: none; }
td[data-col=machine], td[data-col=backend], td[data-col=device], td[data-col=precision],
td[data-col=peak-source], td[data-col=findings], td[data-col=measured] { text-align: left; }
td[data-col=machine], td[data-col=peak-source], td[data-col=findings], td[data-col=measured] {
  white-space: normal; min-width: 8em; max-width: 16em; }
#chip-details { margin-top: 0.8em; }
tr.row:nth-child(even) { background: #fafafc; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #555; }
.problem { color: #a00; } .notes { font-size: 12px; color: #444; }
code { font-size: 12px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_page(table: ChipTable) -> str:
    """The chip table as one self-contained page: inline CSS and SVG, nothing fetched."""
    tables = "\n".join(_html_table(table, *spec) for spec in PAGE_TABLES)
    vendors = missing_vendors(table)
    vendors_html = f'<p id="missing-vendors"><b>{_e(vendors)}</b></p>\n' if vendors else ""
    findings = [(i.label, d) for i in table.machines for d in i.findings]
    if findings:
        items = []
        for label, d in findings:
            ci = d.get("ci95")
            interval = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-"
            items.append(
                f'<tr class="finding"><td>{_e(label)}</td><td>{_e(d["case"])}</td>'
                f"<td>{d['mlx_minus_torch']:+.2f}</td><td>{_e(interval)}</td></tr>"
            )
        findings_html = (
            '<table id="findings-table"><thead><tr><th>machine</th><th>case</th><th>MLX - torch (dB)</th>'
            f"<th>95 % interval</th></tr></thead><tbody>{''.join(items)}</tbody></table>"
        )
    else:
        findings_html = "<p>None: no difference's 95 % interval leaves out zero.</p>"
    sustained_html = ""
    if any(run.get("samples") for info in table.machines for run in info.sustained):
        sustained_html = (
            f'<figure id="plot-sustained">{sustained_svg(table)}\n<figcaption>ms per iteration over a sustained '
            "run (<code>dip bench all --sustained 300</code>): fanless machines slow down once hot.</figcaption>\n"
            "</figure>\n"
        )
    paper_html = "".join(
        paper_table.html_section(i.paper, i.label, i.paper["_date"], i.paper["_command"]) + "\n"
        for i in table.machines
        if i.paper
    )
    machines = []
    for info in table.machines:
        lines = "".join(f"<li>{_e(line)}</li>" for line in _machine_lines(info))
        machines.append(
            f'<li class="machine" data-machine="{_e(info.label)}"><b>{_e(info.label)}</b><ul>{lines}</ul></li>'
        )
    files = "".join(f"<li><code>{_e(f)}</code> (schema version {v})</li>" for f, v in table.files)
    problems = "".join(f'<li class="problem">{_e(p)}</li>' for p in table.problems) or "<li>None.</li>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in NOTES)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_e(TITLE)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{_e(TITLE)}</h1>
<p id="summary">{len(table.machines)} machines, {len(table.rows)} rows, from {len(table.files)} files;
{len(table.problems)} skipped.</p>
{vendors_html}{tables}
<ul class="notes">{notes}</ul>
<h2>Plots</h2>
<figure id="plot-speed">{speed_svg(table)}
<figcaption>ms per iteration against image side, per machine (log-log); solid: step, dashed: loop.</figcaption>
</figure>
<figure id="plot-ratio">{ratio_svg(table)}
<figcaption>MLX / torch step time per machine and device; below the line MLX is faster.</figcaption>
</figure>
{sustained_html}{paper_html}<h2>MLX - torch quality findings</h2>
{findings_html}
<h2 id="fast">{_e(FAST_TITLE)}</h2>
<p>{_e(FAST_INTRO)}</p>
{_fast_html(table)}
<h2>Machines</h2>
<ul id="machines">{"".join(machines)}</ul>
<h2>Files read</h2>
<ul id="files">{files}</ul>
<h2>Files skipped</h2>
<ul id="problems">{problems}</ul>
</body>
</html>
"""


def write_pages(table: ChipTable, html_path: Path | None = None, markdown_path: Path | None = None) -> list[Path]:
    """Write the page(s) asked for, each atomically (a reader never sees half a page)."""
    written = []
    for path, text in ((html_path, html_page), (markdown_path, markdown)):
        if path is not None:
            with atomic_write(path) as fh:
                fh.write(text(table).encode())
            written.append(path)
    return written
