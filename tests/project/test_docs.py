"""The README and the docs site (mkdocs.yml, docs/): the CLI reference has every option of every command, the
README stays a five-minute read, and every relative link points to a file (and heading) that exists."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.common import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(command, path="dip"):
    """(path, command) for every command the user can call, walked here, not by the generator under test."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _tree(sub, f"{path} {name}")


def _sections(text: str) -> dict[str, str]:
    """The reference's sections, by command path (its headings are "## `dip run`", "### `dip bench all`")."""
    parts = re.split(r"^#{2,4} `(dip[^`]*)`$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def missing_from_reference(text: str) -> list[str]:
    """Every command with no section, every argument and option flag absent from its command's section, and every
    option whose help is missing from its row, as "dip run --seed"."""
    from cli import app

    found = _sections(text)
    missing = []
    for path, command in _tree(typer.main.get_command(app)):
        if path not in found:
            missing.append(path)
            continue
        body = found[path]
        for param in command.params:
            if param.hidden:
                continue
            if param.param_type_name == "argument":
                name = param.metavar or param.name
                if not re.search(rf"^\| `{re.escape(name)}(\.\.\.)?` \|", body, re.M | re.I):
                    missing.append(f"{path} {name}")
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", body):
                    missing.append(f"{path} {flag}")
            rows = [line for line in body.splitlines() if line.startswith("|") and f"`{param.opts[0]}`" in line]
            if rows and param.help and not rows[0].rstrip(" |").rsplit("|", 1)[-1].strip():
                missing.append(f"{path} {param.opts[0]} (its help)")
    return missing


@pytest.fixture(scope="module")
def reference() -> str:
    return _hook().render()


def test_every_option_of_every_command_is_in_the_cli_reference(reference):
    from cli import app

    paths = [path for path, _ in _tree(typer.main.get_command(app))]
    assert {"dip", "dip run", "dip batch", "dip ui", "dip bench", "dip bench all", "dip bench speed"} <= set(paths)
    assert missing_from_reference(reference) == []


def test_the_check_finds_an_option_or_a_command_left_out(reference):
    """The check above would fail: a reference without one option's row, or without a command, is caught."""
    without_option = "\n".join(line for line in reference.splitlines() if "`--checkpoint-every`" not in line)
    assert missing_from_reference(without_option) == ["dip run --checkpoint-every"]
    without_flag = reference.replace("`--no-keep-known`", "`--keep-known`")
    assert {"dip run --no-keep-known", "dip batch --no-keep-known"} <= set(missing_from_reference(without_flag))
    sections = re.split(r"(?=^### `dip bench all`$)", reference, flags=re.M)
    assert "dip bench all" in missing_from_reference(sections[0])


def test_the_cli_page_has_the_generators_marker():
    assert _hook().MARKER in (DOCS / "cli.md").read_text()


def test_the_readme_is_short_and_keeps_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    setup = readme.split("## Set-up: two commands\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", setup, re.S).group(1)
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == [
        "bash scripts/demo.sh",
        "bash scripts/test.sh",
    ]
    assert "The demo writes `demo/scene.png`" in setup
    assert "](docs/ui.png)" in readme and re.search(r"\]\(docs/examples/\w+_strip\.png\)", readme)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _text(page: Path) -> str:
    text = page.read_text()
    if page == DOCS / "cli.md":  # its headings and links are generated when the site is built
        text = text.replace(_hook().MARKER, _hook().render())
    return text


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", _text(page), flags=re.M | re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", _text(page), flags=re.M | re.S)  # not in code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # nor in code spans
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_points_to_a_file_that_exists(page):
    broken = []
    for link in _links(page):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", link):  # https://, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no such heading in {target.relative_to(ROOT)}")
    assert broken == []


def test_the_link_check_sees_the_links():
    """The pattern finds the README's links and pictures (so the test above checks something)."""
    found = _links(ROOT / "README.md")
    assert {"docs/guide.md", "docs/ui.png", "docs/backends.md#on-a-mac"} <= set(found)
    assert sum(len(_links(page)) for page in PAGES) > 50


def test_the_site_builds_strictly_with_the_generated_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli_page = (site / "cli" / "index.html").read_text()
    assert "--checkpoint-every" in cli_page and 'id="dip-bench-all"' in cli_page
    assert "photo-cell-s75-96@1" in (site / "stopping" / "index.html").read_text()  # the included per-photo table
