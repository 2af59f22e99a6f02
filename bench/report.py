"""`dip bench report`: results from any number of machines -> one Markdown table and PNG charts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fingerprint import machine_label
from bench.schema import load_folder, read_json
from dip_core.errors import UserErrors
from dip_core.system.atomic import atomic_write


class ReportError(UserErrors):
    """Nothing to report: one line per file that could not be used, and why nothing is left."""


REPORTED = ("speed", "quality")


@dataclass(frozen=True)
class Loaded:
    """The speed and quality results found, one line per file that could not be used, and how many `dip bench all`
    results were left to the chip table (`--html`, `--markdown`)."""

    results: list[dict[str, Any]]
    problems: list[str]
    machine_results: int


def load_results(paths: list[Path]) -> Loaded:
    """Speed and quality results from files and folders, going on past bad files (each a problem line); a folder's
    other bench results are skipped. ReportError lists the problems when nothing is left to report."""
    good, problems = load_folder(paths)
    results = []
    machines = 0
    for loaded in good:
        if loaded.version != 0:
            machines += 1
            continue
        data = read_json(loaded.path)  # as written: the tables below read its own fields
        data["_file"] = loaded.path.name
        results.append(data)
    if not results:
        if machines:
            problems.append(
                f"{machines} `dip bench all` result(s) and no speed or quality result: "
                "`dip bench report --html PAGE.html` (or --markdown PAGE.md) shows them"
            )
        else:
            problems.append("no speed or quality results given")
        raise ReportError(problems)
    return Loaded(results, problems, machines)


def _label(res: dict[str, Any]) -> str:
    """The machine, and the project revision that was measured."""
    return f"{machine_label(res['fingerprint'])} @ {res['fingerprint'].get('dip_revision') or '?'}"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f} MB"


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def speed_markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| machine | date | backend | device | precision | size | net | what | ms/iter (median, min-max) | it/s "
        "| peak memory | GFLOP/s | % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    loop_lines = ["| machine | date | backend | device | size | what | loop / step |", "|---|---|---|---|---|---|---|"]
    ratio_lines = ["| machine | date | device | size | net | step | MLX / torch |", "|---|---|---|---|---|---|---|"]
    for res in results:
        if res["kind"] != "speed":
            continue
        label, date = _label(res), res.get("date", "")[:10]
        for r in res["rows"]:
            lines.append(
                f"| {label} | {date} | {r['backend']} | {r['device']} | {r.get('precision', '-')} | {r['size']}² "
                f"| {r['net']} | {r['kind']} "
                f"| {r['ms_per_iter']:.1f} ({r['ms_min']:.1f}-{r['ms_max']:.1f}) | {r['iters_per_s']:.2f} "
                f"| {_mb(r['peak_memory_bytes'])} | {r['gflops_per_s']:.1f} | {100 * r['roofline_fraction']:.0f} % |"
            )
        for o in res.get("loop_overhead", []):
            loop_lines.append(
                f"| {label} | {date} | {o['backend']} | {o['device']} | {o['size']}² | {o['kind']} "
                f"| {o['loop_over_step']:.3f} |"
            )
        for q in res.get("ratios", []):
            ratio_lines.append(
                f"| {label} | {date} | {q['device']} | {q['size']}² | {q['net']} | {q['kind']} "
                f"| {q['mlx_over_torch']:.2f} |"
            )
    notes = [
        "GFLOP/s and % of matmul peak count the FLOPs of direct convolution (forward and both gradients): for "
        "MLX's CPU kernels, which compute 3x3 stride-1 convolutions by Winograd F(2x2,3x3) with 2.25x fewer "
        "multiplications, they are effective rates.",
        "",
    ]
    for res in results:
        if res["kind"] == "speed":
            fp = res["fingerprint"]
            blas = ", ".join(f"{k} {str(v).split(' (')[0]}" for k, v in (fp.get("blas") or {}).items() if v)
            notes.append(
                f"- {_label(res)}: BLAS {blas}; MLX CPU kernels: {fp.get('mlx_cpu_kernels') or 'none'}; "
                f"allocator: {fp.get('allocator') or 'system default'}"
            )
    loops = "\n".join(loop_lines) + "\n\n" if len(loop_lines) > 2 else ""
    return "\n".join(lines) + "\n\n" + "\n".join(ratio_lines) + "\n\n" + loops + "\n".join(notes) + "\n"


def quality_markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| machine | profile | case | backend | precision | size | iters | PSNR input | final | EMA | best (iter) "
        "| result | SSIM | paper | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if res["kind"] != "quality":
            continue
        label = _label(res)
        for r in res["rows"]:
            size = "x".join(str(s) for s in r["size"])
            best = "-" if r.get("best_psnr") is None else f"{r['best_psnr']:.2f} ({r['best_iter']})"
            lines.append(
                f"| {label} | {r['profile']} | {r['case']} | {r['backend']} | {r.get('precision', '-')} | {size} "
                f"| {r['iters']} "
                f"| {_f(r.get('psnr_input'))} | {_f(r.get('psnr'))} | {_f(r.get('psnr_ema'))} | {best} "
                f"| {_f(r.get('psnr_result'))} | {_f(r.get('ssim'), '{:.3f}')} | {_f(r.get('paper_psnr'))} "
                f"| {r['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def charts(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    speed = [r for r in results if r["kind"] == "speed"]
    if speed:
        fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        for res in speed:
            label = _label(res)
            series: dict[tuple[str, str], list[tuple[int, float]]] = {}
            for r in res["rows"]:
                if r["kind"] == "step" and r["net"] == "preset":
                    series.setdefault((r["backend"], r["device"]), []).append((r["size"], r["ms_per_iter"]))
            for (backend, device), pts in series.items():
                pts.sort()
                ax.loglog(*zip(*pts, strict=True), marker="o", label=f"{label} · {backend} ({device})")
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel("ms per iteration (fwd + bwd + Adam)")
        ax.set_title("Deep Image Prior step time, default denoising network")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "speed.png"))
        plt.close(fig)
    quality = [r for r in results if r["kind"] == "quality"]
    if quality:
        rows = [(machine_label(res["fingerprint"]), r) for res in quality for r in res["rows"] if r.get("psnr_result")]
        cases = sorted({r["case"] for _, r in rows})
        groups = sorted({(m, r["backend"], r["profile"]) for m, r in rows})
        fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
        width = 0.8 / max(len(groups), 1)
        for g, (machine, backend, profile) in enumerate(groups):
            vals = {
                r["case"]: r["psnr_result"]
                for m, r in rows
                if (m, r["backend"], r["profile"]) == (machine, backend, profile)
            }
            xs = [i + g * width for i, c in enumerate(cases) if c in vals]
            ax.bar(xs, [vals[c] for c in cases if c in vals], width, label=f"{machine} · {backend} · {profile}")
        inputs = {r["case"]: r["psnr_input"] for _, r in rows}
        ax.scatter([i + 0.4 - width / 2 for i in range(len(cases))], [inputs[c] for c in cases], color="black",
                   marker="_", s=300, label="corrupted input", zorder=3)  # fmt: skip
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, rotation=15, fontsize=8)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("Final PSNR per case")
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "quality.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return path


def render(paths: list[Path], out_dir: Path) -> tuple[Path, list[Path], Loaded]:
    """report.md and its charts in `out_dir` from the speed and quality results in `paths`; also what was loaded
    (for its problem lines)."""
    loaded = load_results(paths)
    results = loaded.results
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# dip benchmark results", ""]
    for res in results:
        fp = res["fingerprint"]
        md.append(
            f"- `{res['_file']}`: {machine_label(fp)}, {fp['os']}, {fp['memory_gib']} GiB, Python {fp['python']}, "
            f"MLX {fp['mlx']}, torch {fp['torch']}, BLAS {fp['blas']}, dip {fp['dip_revision']}, {res.get('date', '')}"
        )
    if any(r["kind"] == "speed" for r in results):
        md += ["", "## Speed", "", speed_markdown(results)]
    if any(r["kind"] == "quality" for r in results):
        md += ["", "## Quality", "", quality_markdown(results)]
    pngs = charts(results, out_dir)
    md += [""] + [f"![{p.stem}]({p.name})" for p in pngs]
    report = out_dir / "report.md"
    with atomic_write(report) as fh:
        fh.write(("\n".join(md) + "\n").encode())
    return report, pngs, loaded
