"""Links from the docs pages to files of the repository outside docs/ (bench/results/*.json, bench/report/...).

The pages link to them relatively (`../bench/report/chips.html`), which works where the pages are read as files
(GitHub, an editor). MkDocs only knows docs/, so in the built site (a MkDocs hook, `hooks:` in mkdocs.yml):

- a file that is not Markdown (a picture, a JSON result, the chip table's HTML page) is copied into the site
  under `repo/`, and the link points at the copy;
- a link to a Markdown file or a folder becomes its path in code, or a link into the repository when mkdocs.yml
  names a `repo_url`;
- `<!-- include ../PATH.md -->` on a line of its own is replaced by that file's text (the stopping study's
  per-photo table, bench/report/stopping-test-set.md, exactly as `bench.autostop table` wrote it).

A link to a file that does not exist is left as it is, so MkDocs reports it and `--strict` fails.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COPIES = "repo"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
INCLUDE = re.compile(r"^<!-- include (\S+) -->$", re.M)
FENCE = re.compile(r"^(```.*?^```)", re.M | re.S)


def outside(target: str, page_uri: str, docs_dir: str) -> Path | None:
    """The repository file (or folder) a relative link of page `page_uri` points at, when it lies outside
    docs/ and exists; None for anything else (a web address, an anchor, a page of the site, a missing file)."""
    path = target.split("#", 1)[0]
    if not path or path.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):
        return None
    docs = Path(docs_dir).resolve()
    resolved = (docs / posixpath.dirname(page_uri) / path).resolve()
    if resolved == docs or docs in resolved.parents or ROOT not in resolved.parents:
        return None
    return resolved if resolved.exists() else None


def _copied(path: Path) -> bool:
    return path.is_file() and path.suffix != ".md"


def on_files(files: Any, config: Any) -> Any:
    """Copy every non-Markdown repository file that a page links to into the site, under repo/."""
    from mkdocs.structure.files import File

    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for _, _, target in LINK.findall(text):
            path = outside(target, page.src_uri, config["docs_dir"])
            if path is None or not _copied(path):
                continue
            uri = f"{COPIES}/{path.relative_to(ROOT).as_posix()}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _rewrite(text: str, page_uri: str, config: Any) -> str:
    def link(found: re.Match[str]) -> str:
        bang, label, target = found.groups()
        path = outside(target, page_uri, config["docs_dir"])
        if path is None:
            return found.group(0)
        rel = path.relative_to(ROOT).as_posix()
        if _copied(path):
            anchor = target[len(target.split("#", 1)[0]) :]
            new = posixpath.relpath(f"{COPIES}/{rel}", posixpath.dirname(page_uri) or ".")
            return f"{bang}[{label}]({new}{anchor})"
        repo_url = (config.get("repo_url") or "").rstrip("/")
        if repo_url:
            return f"{bang}[{label}]({repo_url}/{'blob' if path.is_file() else 'tree'}/HEAD/{rel})"
        return f"{label} (`{rel}`)" if label != rel else f"`{rel}`"

    parts = FENCE.split(text)  # odd parts are fenced code blocks: left as they are
    return "".join(part if i % 2 else LINK.sub(link, part) for i, part in enumerate(parts))


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    """Includes first, then the links that leave docs/."""

    def include(found: re.Match[str]) -> str:
        path = outside(found.group(1), page.file.src_uri, config["docs_dir"])
        if path is None or not path.is_file():
            from mkdocs.exceptions import PluginError

            raise PluginError(f"{page.file.src_uri}: cannot include {found.group(1)} (no such file outside docs/)")
        return path.read_text(encoding="utf-8").strip()

    return _rewrite(INCLUDE.sub(include, markdown), page.file.src_uri, config)
