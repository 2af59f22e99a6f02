"""The CLI reference (docs/cli.md), generated from the Typer app each time the site is built.

A MkDocs hook (`hooks:` in mkdocs.yml): the marker in docs/cli.md is replaced by the reference, made from the
command tree that `dip` itself runs (`typer.main.get_command(cli.app)`): every command and subcommand, its
help, and every argument and option with its flags, type or choices, default and help, as `dip COMMAND --help`
shows them. Nothing is committed that could fall behind the code.

    python docs/hooks/cli_reference.py      prints the reference as Markdown
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"


def _app() -> Any:
    """The `dip` command tree (click), from this checkout's cli.py."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import typer

    from cli import app

    return typer.main.get_command(app)


def commands(root: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """(command path, command, context) for `dip` and every command under it, in `dip --help`'s order; hidden
    commands are left out, as `--help` leaves them out."""

    def walk(command: Any, name: str, parent: Any) -> Iterator[tuple[str, Any, Any]]:
        ctx = command.context_class(command, info_name=name, parent=parent)
        yield ctx.command_path, command, ctx
        for sub_name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk(sub, sub_name, ctx)

    yield from walk(root if root is not None else _app(), "dip", None)


def _text(s: str) -> str:
    """Help text as Markdown: code spans kept, `<`, `>` and `&` escaped elsewhere (`<machine>` is no HTML tag)."""
    parts = s.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        return html.escape(s, quote=False)
    return "`".join(part if i % 2 else html.escape(part, quote=False) for i, part in enumerate(parts))


def _cell(s: str) -> str:
    """A table cell: one line, pipes outside code spans escaped."""
    parts = _text(" ".join(s.split())).split("`")
    if len(parts) % 2 == 0:
        return "`".join(parts).replace("|", "\\|")
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _code(s: str) -> str:
    return f"`{s}`" if s else ""


def _help_and_extra(help_text: str) -> tuple[str, str]:
    """Split click's "help  [default: x; x>=1; required]" into the help and the bracket's contents."""
    found = re.match(r"(?s)(.*?)\s*\[([^\[\]]*)\]\s*$", help_text)
    if found and re.search(r"default:|required|x[<>=]|<=x", found.group(2)):
        return found.group(1), found.group(2)
    return help_text, ""


def _home(s: str) -> str:
    """A per-user default (`~/.local/share/dip/...`) as any user's, not as the builder's home."""
    home = str(Path.home())
    return s.replace(home, "~") if home not in ("", "/") else s


def _paragraphs(help_text: str) -> str:
    lines = [line for line in help_text.strip().splitlines() if line.strip() != "\b"]
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join(_text(" ".join(p.split())) for p in paragraphs if p.strip())


def _param_rows(command: Any, ctx: Any) -> tuple[list[str], list[str]]:
    arguments, options = [], []
    for param in command.params:
        record = param.get_help_record(ctx)
        if record is None or getattr(param, "hidden", False):
            continue
        declared, help_text = record
        help_text, extra = _help_and_extra(_home(help_text))
        if param.param_type_name == "argument":
            name, _, kind = declared.partition(" ")
            required = "yes" if param.required else "no"
            arguments.append(f"| {_code(name)} | {_cell(_code(kind))} | {required} | {_cell(help_text)} |")
            continue
        names = set(param.opts) | set(param.secondary_opts)
        first = declared.split(" / ")[0] if param.secondary_opts else declared
        kind = " ".join(t for t in first.split() if t.rstrip(",;") not in names)
        flags = ", ".join(_code(o) for o in sorted(param.opts, key=lambda o: (o.startswith("--"), o)))
        if param.secondary_opts:
            flags += " / " + ", ".join(_code(o) for o in param.secondary_opts)
        kind = kind or ("flag" if getattr(param, "is_flag", False) or getattr(param, "count", False) else "")
        kind = _code(kind) if kind != "flag" else kind
        options.append(f"| {flags} | {_cell(kind)} | {_cell(extra)} | {_cell(help_text)} |")
    return arguments, options


def render_command(path: str, command: Any, ctx: Any) -> str:
    """One command's section: its help, usage, arguments, options and (for a group) its subcommands."""
    level = "#" * min(2 + path.count(" ") - 1, 4) if " " in path else "##"
    out = [f"{level} `{path}`", ""]
    if command.help:
        out += [_paragraphs(command.help), ""]
    usage = " ".join(command.collect_usage_pieces(ctx))
    out += ["```", f"{path} {usage}".rstrip(), "```", ""]
    arguments, options = _param_rows(command, ctx)
    if arguments:
        out += ["| argument | type | required | help |", "|---|---|---|---|", *arguments, ""]
    if options:
        out += ["| option | type | default, range | help |", "|---|---|---|---|", *options, ""]
    subcommands = [(n, c) for n, c in getattr(command, "commands", {}).items() if not getattr(c, "hidden", False)]
    if subcommands:
        out += ["Commands:", ""]
        for name, sub in subcommands:
            short = sub.get_short_help_str(limit=200) if hasattr(sub, "get_short_help_str") else sub.help or ""
            anchor = f"{path} {name}".replace(" ", "-")
            out.append(f"- [`{path} {name}`](#{anchor}): {_text(short)}")
        out.append("")
    if getattr(command, "epilog", None):
        out += [_paragraphs(command.epilog), ""]
    return "\n".join(out)


def render(root: Any = None) -> str:
    """The whole reference: every command's section, `dip` first."""
    return "\n".join(render_command(path, command, ctx) for path, command, ctx in commands(root)).rstrip() + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """MkDocs: cli.md gets the reference where its marker is."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}: the CLI reference has nowhere to go")
    return markdown.replace(MARKER, render())


if __name__ == "__main__":
    sys.stdout.write(render())
