"""The paper's table of a `dip bench paper` result: our figure beside the published one and its source, per case,
backend and figure, with ms/iter and total time; as Markdown and as a static HTML page (also in the chip table)."""

from __future__ import annotations

import html
import statistics
from typing import Any

HEADERS = ("case", "backend", "size", "iterations", "what is measured", "ours (dB)", "paper (dB)", "paper's source",
           "ms/iter", "total s")  # fmt: skip


def _db(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} ({len(values)} seeds)"


def table_rows(paper: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per case x backend x figure, seeds pooled: our mean (± sd over seeds), the published number and its
    source, the mean ms/iter and the seeds' total seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in paper["rows"]:
        groups.setdefault((r["case"], r["backend"]), []).append(r)
    out = []
    for (case, backend), runs in groups.items():
        first = runs[0]
        size = "x".join(str(v) for v in first.get("size") or []) or "-"
        ms = statistics.fmean(r["ms_per_iter"] for r in runs if r.get("ms_per_iter") is not None)
        total = sum(r["seconds"] for r in runs)
        for k, fig in enumerate(first["figures"]):
            ours = [r["figures"][k]["ours"] for r in runs if r["figures"][k]["ours"] is not None]
            published = "-" if fig["published"] is None else f"{fig['published']:.2f}"
            out.append((case, backend, size, str(first["iters"]), fig["what"], _db(ours), published, fig["source"],
                        f"{ms:.1f}", f"{total:.0f}"))  # fmt: skip
    return out


def intro_lines(paper: dict[str, Any], machine: str, date: str, command: str | None) -> list[str]:
    """What the table is: its settings (marked when they are not the paper's), where it ran, what was skipped."""
    lines = [f"Profile **{paper['profile']}**: {paper['note']}."]
    lines.append(f"Measured on {machine}, {date[:10]}" + (f", by `{command}`." if command else "."))
    lines.append(f"Published numbers: {paper.get('source') or 'the paper'}; each row names its table or says none.")
    lines += [f"Skipped {s['case']}: {s['reason']}." for s in paper.get("skipped") or []]
    return lines


def markdown(paper: dict[str, Any], machine: str, date: str, command: str | None = None, level: int = 1) -> str:
    """The table as Markdown, under a heading of the given level."""
    out = [f"{'#' * level} The paper's tables ({paper['profile']} profile)", ""]
    out += [line + "  " for line in intro_lines(paper, machine, date, command)]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table_rows(paper)]
    return "\n".join(out) + "\n"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_section(paper: dict[str, Any], machine: str, date: str, command: str | None = None) -> str:
    """The table as an HTML fragment (an <h2>, its lines and the table), for a page of its own or the chip table."""
    intro = "".join(f"<li>{_e(line.replace('**', '').replace('`', ''))}</li>" for line in
                    intro_lines(paper, machine, date, command))  # fmt: skip
    head = "".join(f"<th>{_e(h)}</th>" for h in HEADERS)
    body = "".join("<tr class=\"paper-row\">" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                   for row in table_rows(paper))  # fmt: skip
    return (
        f'<h2>The paper\'s tables ({_e(paper["profile"])} profile)</h2>\n<ul class="notes">{intro}</ul>\n'
        f'<div class="scroll"><table class="paper-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #1d1d1f; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #d0d0d5; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f5; } .notes { font-size: 12px; color: #444; }
"""


def html_page(paper: dict[str, Any], machine: str, date: str, command: str | None = None) -> str:
    """The table as a self-contained page (inline CSS, nothing fetched)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n'
        f"<title>dip: the paper's tables</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"{html_section(paper, machine, date, command)}\n</body>\n</html>\n"
    )
