"""A run option's help and bounds are written once (RunOptions' field metadata) and read by the CLI, the web page's
form and /api/info, and the docs' CLI reference (generated from the CLI): no surface says or checks otherwise."""

from __future__ import annotations

import json
from dataclasses import fields

import click
import numpy as np
import pytest
import typer
from PIL import Image as PILImage

from cli import app
from dip_cli.options import RUN_OPTIONS
from dip_core.errors import UserError
from dip_core.run.options import RunOptions, bounds_text, option_help, option_table
from tests.common import runner


def run_command() -> click.Command:
    group = typer.main.get_command(app)
    return group.commands["run"]  # type: ignore[attr-defined]


def test_the_cli_shows_each_options_own_help():
    params = {p.name: p for p in run_command().params}
    for name, (_, _, field) in RUN_OPTIONS.items():
        assert params[name].help == option_help(field), name
    assert option_help("factor").startswith("sr: ")  # a task-specific option names its tasks, from the registry


def test_every_run_option_has_help():
    assert all(f.metadata["help"] for f in fields(RunOptions))
    assert {field for _, _, field in RUN_OPTIONS.values()} <= {f.name for f in fields(RunOptions)}


BAD = [("iters", 0), ("window", 1), ("peak", 0.0), ("noise_sigma", 300.0), ("seed", -1), ("threads", 0), ("tile", -4)]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_out_of_bounds_is_refused_with_the_bounds_in_words(name, value):
    with pytest.raises(UserError) as caught:
        RunOptions(**{name: value})
    assert bounds_text(name) in str(caught.value) and str(value) in str(caught.value)


@pytest.mark.parametrize(("name", "value"), [("iters", 0), ("window", 1), ("seed", -1)])
def test_the_cli_refuses_them_in_the_same_words(tmp_path, name, value):
    path = tmp_path / "in.png"
    PILImage.fromarray(np.zeros((9, 11), np.uint8)).save(path)
    result = runner.invoke(app, ["run", "denoise", str(path), f"--{name.replace('_', '-')}", str(value)])
    assert result.exit_code == 2
    assert bounds_text(name) in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "in.denoise.png").exists()


def test_the_page_gets_the_same_table_and_its_form_the_same_bounds():
    pytest.importorskip("starlette")
    from dip_ui.forms import BadRequest, parse_run

    with pytest.raises(BadRequest, match=bounds_text("peak")):
        parse_run({"task": "poisson", "image": "a", "peak": -3}, max_iters=100)
    with pytest.raises(BadRequest, match="between 0"):
        parse_run({"task": "denoise", "image": "a", "seed": -1}, max_iters=100)
    table = json.loads(json.dumps(option_table()))
    assert table["peak"] == {"help": option_help("peak"), "low": None, "high": 1e6, "above": 0}
    assert set(table) == {f.name for f in fields(RunOptions)}
