"""dip_core's rooms import only from their own room or lower ones: no import cycle between rooms, and a room can
be read without the ones above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.common import ROOT

CORE = ROOT / "dip_core"
# lowest first; a module may import from its own level or one below
LEVELS = ["errors", "system", "model", "problem", "backend", "fit", "run"]


def room_of(module: str) -> str | None:
    """The room of a dip_core module name (`dip_core.fit.loop` -> `fit`); None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "dip_core" else None


def imports_of(path: Path) -> set[str]:
    """Every dip_core module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dip_core")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dip_core"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names if node.module == "dip_core"}
    return found


def modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if p.parent != CORE or p.stem in LEVELS)


def test_every_module_is_in_a_room():
    loose = [p.name for p in CORE.glob("*.py") if p.stem not in LEVELS and p.stem != "__init__"]
    assert not loose, f"modules outside the rooms: {loose}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_imports_go_down_only(path):
    own = path.stem if path.parent == CORE else path.parent.name
    above = [m for m in imports_of(path) if room_of(m) in LEVELS and LEVELS.index(room_of(m)) > LEVELS.index(own)]
    assert not above, f"{path.relative_to(CORE)} ({own}) imports from rooms above it: {sorted(above)}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dip_core.run.api import restore\n")
    assert "dip_core.run.api" in imports_of(bad)
    assert room_of("dip_core.run.api") == "run"
