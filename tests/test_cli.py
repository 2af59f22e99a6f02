"""The command line: help, listing commands, and one-line errors with exit code 2."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from cli import app
from dip_core.backend import available_backends

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("crosscheck", "nets", "backends"):
        assert command in result.output


def test_nets_lists_the_paper_default():
    result = runner.invoke(app, ["nets"])
    assert result.exit_code == 0
    assert "2,217,831" in result.output


def test_backends_command():
    result = runner.invoke(app, ["backends"])
    assert result.exit_code == 0
    assert "mlx" in result.output and "torch" in result.output


def test_crosscheck_human_output():
    result = runner.invoke(app, ["crosscheck", "--config", "tiny", "--size", "33", "35", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "forward_max_abs_diff" in result.output and "all targets met" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["crosscheck", "--config", "huge"], "unknown network 'huge'"),
        (["crosscheck", "--config", "/missing/net.json"], "not found"),
        (["crosscheck", "--size", "16", "16"], "too small"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:")
    assert "Traceback" not in result.output


def test_invalid_option_values_exit_2():
    result = runner.invoke(app, ["crosscheck", "--device", "tpu"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["crosscheck", "--steps", "-1"])
    assert result.exit_code == 2


def test_doctor_reports_blas_and_matmul_speed():
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "GFLOP/s" in result.output and "BLAS" in result.output
    assert "memory allocator:" in result.output
    assert "default precision" in result.output and "fp32" in result.output  # the CPU's default
    if sys.platform.startswith("linux") and "mlx" in available_backends():
        assert "mlx CPU kernels:" in result.output
