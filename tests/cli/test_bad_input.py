"""Bad input, tried on purpose: exit code 2, one line naming the problem, no traceback, nothing written.

Every row of CASES is one kind of bad input to `dip run` (or `dip degrade`); API_CASES
feed the same kinds of mistake to `dip_core.run.api.restore`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.errors import UserError
from dip_core.problem.registry import Task
from dip_core.problem.task_options import TAKEN_BY, flag, takes
from dip_core.run.api import restore
from dip_core.run.tiled import restore_tiled
from tests.common import TINY_NET, TINY_NET_ARGS, runner
from tests.images import synthetic, to_u8

FAST = [*TINY_NET_ARGS, "--iters", "2", "--device", "cpu", "-q"]


@pytest.fixture
def files(tmp_path):
    """A folder of good and bad files; the image is 37x45 (odd on purpose)."""
    clean = synthetic(37, 45)
    PILImage.fromarray(to_u8(clean)).save(tmp_path / "img.png")
    PILImage.fromarray(to_u8(synthetic(20, 20))).save(tmp_path / "small.png")
    PILImage.fromarray(np.full((37, 45), 128, np.uint8)).save(tmp_path / "grey_mask.png")
    PILImage.fromarray(np.zeros((37, 45), np.uint8)).save(tmp_path / "black_mask.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "folder.png").mkdir()
    data = (tmp_path / "img.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "img.denoise.png").write_bytes(b"an earlier result")
    (tmp_path / "bad.ckpt.npz").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "net.json").write_text("{not json")
    return tmp_path


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# (name, command after `dip`, words the message must contain)
CASES = [
    ("missing file", ["run", "denoise", "{d}/nope.png"], "no such file"),
    ("zero-byte file", ["run", "denoise", "{d}/empty.png"], "empty"),
    ("text file named .png", ["run", "denoise", "{d}/text.png"], "not an image"),
    ("directory", ["run", "denoise", "{d}/folder.png"], "directory"),
    ("truncated PNG", ["run", "denoise", "{d}/cut.png"], "cannot read"),
    ("mask size mismatch", ["run", "inpaint", "{d}/img.png", "--mask", "{d}/small.png"], "must match"),
    ("empty mask", ["run", "inpaint", "{d}/img.png", "--mask", "{d}/black_mask.png"], "no known"),
    (
        "non-binary mask, strict",
        ["run", "inpaint", "{d}/img.png", "--mask", "{d}/grey_mask.png", "--strict-mask"],
        "black and white",
    ),
    ("missing mask file", ["run", "inpaint", "{d}/img.png", "--mask", "{d}/nope.png"], "no such file"),
    (
        "mask and drop together",
        ["run", "restore", "{d}/img.png", "--mask", "{d}/small.png", "--drop", "0.5"],
        "not both",
    ),
    ("drop fraction out of range", ["run", "restore", "{d}/img.png", "--drop", "1.5"], "drop"),
    ("unknown mask colour", ["run", "inpaint", "{d}/img.png", "--mask-color", "ultraviolet"], "unknown colour"),
    ("inpaint without a mask", ["run", "inpaint", "{d}/img.png"], "needs --mask"),
    ("factor 3", ["run", "sr", "{d}/img.png", "--factor", "3"], "factor"),
    ("deblur without a kernel", ["run", "deblur", "{d}/img.png"], "needs --kernel"),
    ("unknown kernel", ["run", "deblur", "{d}/img.png", "--kernel", "sharpen:2"], "unknown kernel"),
    ("kernel larger than the image", ["run", "deblur", "{d}/small.png", "--kernel", "box:31"], "larger than the image"),
    ("negative sigma", ["degrade", "denoise", "{d}/img.png", "--out", "{d}", "--sigma", "-5"], "sigma"),
    ("zero iterations", ["run", "denoise", "{d}/img.png", "--iters", "0"], "iterations"),
    ("absurd iterations", ["run", "denoise", "{d}/img.png", "--iters", "1000000000"], "iterations"),
    ("negative learning rate", ["run", "denoise", "{d}/img.png", "--lr", "-1"], "learning rate"),
    ("EMA weight of 1.5", ["run", "denoise", "{d}/img.png", "--ema", "1.5"], "EMA"),
    ("unknown task", ["run", "paint", "{d}/img.png"], "paint"),
    ("unknown backend", ["run", "denoise", "{d}/img.png", "--backend", "jax"], "jax"),
    ("unknown device", ["run", "denoise", "{d}/img.png", "--device", "tpu"], "tpu"),
    ("unknown preset", ["run", "denoise", "{d}/img.png", "--preset", "nope"], "unknown preset"),
    ("preset of another task", ["run", "denoise", "{d}/img.png", "--preset", "sr4"], "is for sr"),
    ("unknown network", ["run", "denoise", "{d}/img.png", "--net", "huge"], "unknown network"),
    ("broken network file", ["run", "denoise", "{d}/img.png", "--net", "{d}/net.json"], "net.json"),
    ("reference of another size", ["run", "denoise", "{d}/img.png", "--reference", "{d}/small.png"], "must match"),
    ("output in a missing folder", ["run", "denoise", "{d}/img.png", "-o", "{d}/no/out.png"], "does not exist"),
    ("output equal to input", ["run", "denoise", "{d}/img.png", "-o", "{d}/img.png"], "refusing to overwrite"),
    ("output of unknown type", ["run", "denoise", "{d}/img.png", "-o", "{d}/out.xyz"], "use one of"),
    ("existing output without --force", ["run", "denoise", "{d}/img.png", "-o", "{d}/img.denoise.png"], "--force"),
    ("variance window of 1", ["run", "denoise", "{d}/img.png", "--window", "1"], "window"),
    ("negative noise level", ["run", "denoise", "{d}/img.png", "--noise-sigma", "-5", "-o", "{d}/n.png"], "noise"),
    ("tile too small", ["run", "denoise", "{d}/img.png", "--tile", "4", "-o", "{d}/t.png"], "tiles"),
    ("resume without checkpoint", ["run", "denoise", "{d}/img.png", "--resume", "-o", "{d}/r.png"], "no checkpoint"),
    ("broken checkpoint", ["run", "denoise", "{d}/img.png", "--resume", "-o", "{d}/bad.png"], "not a readable"),
    ("unknown padding", ["run", "denoise", "{d}/img.png", "--pad", "zeros", "-o", "{d}/p.png"], "zeros"),
    # Options the task does not use: refused, never silently dropped.
    ("mask on denoise", ["run", "denoise", "{d}/img.png", "--mask", "{d}/small.png"], "denoise does not use --mask"),
    ("factor on denoise", ["run", "denoise", "{d}/img.png", "--factor", "4"], "--factor (only sr takes it)"),
    ("drop on denoise", ["run", "denoise", "{d}/img.png", "--drop", "0.5"], "--drop (only restore takes it)"),
    ("kernel on sr", ["run", "sr", "{d}/img.png", "--factor", "2", "--kernel", "box:3"], "sr does not use --kernel"),
    ("noise level on sr", ["run", "sr", "{d}/img.png", "--factor", "2", "--noise-sigma", "25"], "--noise-sigma"),
    ("mask colour on denoise", ["run", "denoise", "{d}/img.png", "--mask-color", "red"], "only inpaint and restore"),
]


@pytest.mark.parametrize(("name", "command", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(files, name, command, words):
    before = _snapshot(files)
    args = [a.format(d=files) for a in command]
    if args[0] == "run":
        # The case's own options come last, so that they win over the fast defaults.
        args = args[:3] + FAST + ([] if "-o" in args else ["-o", str(files / "out.png")]) + args[3:]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert words in lines[0]
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError)
    assert _snapshot(files) == before  # nothing written, nothing changed


def test_there_are_at_least_25_kinds():
    assert len({c[0] for c in CASES}) >= 25


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions(files):
    os.chmod(files / "img.png", 0)
    try:
        result = runner.invoke(app, ["run", "denoise", str(files / "img.png"), "-o", str(files / "o.png"), *FAST])
    finally:
        os.chmod(files / "img.png", 0o644)
    assert result.exit_code == 2 and "not readable" in result.output


def test_unreadable_permissions_as_the_loader_sees_them(files, monkeypatch):
    # Runs as root too: the loader is told what an unprivileged user's access check says.
    import dip_core.problem.image

    monkeypatch.setattr(dip_core.problem.image.os, "access", lambda path, mode: False)
    before = _snapshot(files)
    result = runner.invoke(app, ["run", "denoise", str(files / "img.png"), "-o", str(files / "o.png"), *FAST])
    assert result.exit_code == 2 and "not readable" in result.output
    assert len([x for x in result.output.splitlines() if x.strip()]) == 1
    assert _snapshot(files) == before


TINY = {**TINY_NET, "iters": 2, "device": "cpu"}
API_CASES = [
    ("4-D array", lambda x: restore("denoise", x[None], **TINY), "image"),
    ("list instead of an image", lambda x: restore("denoise", [[0.5]], **TINY), "must be a path"),
    ("unknown task", lambda x: restore("paint", x, **TINY), "paint"),
    ("unknown backend", lambda x: restore("denoise", x, backend="jax", **TINY), "jax"),
    ("unknown device", lambda x: restore("denoise", x, backend="torch", **{**TINY, "device": "tpu"}), "tpu"),
    ("mask of another size", lambda x: restore("inpaint", x, mask=np.ones((5, 5)), **TINY), "must match"),
    ("factor 3", lambda x: restore("sr", x, factor=3, **TINY), "factor"),
    ("negative iterations", lambda x: restore("denoise", x, **{**TINY, "iters": -3}), "iterations"),
    ("unknown setting", lambda x: restore("denoise", x, speed=11, **TINY), "unknown setting"),
    ("unknown stop rule", lambda x: restore("denoise", x, stop="never", **TINY), "stop"),
    ("unknown padding", lambda x: restore("denoise", x, pad="zeros", **TINY), "padding"),
    ("resume without a file", lambda x: restore("denoise", x, resume=True, **TINY), "checkpoint"),
    ("overlap over half the tile", lambda x: restore_tiled("denoise", x, 16, 12, **TINY), "overlap"),
]


@pytest.mark.parametrize(("name", "call", "words"), API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_input_to_the_api_raises_a_user_error(name, call, words):
    with pytest.raises(UserError) as info:
        call(synthetic(37, 45))
    assert words in str(info.value) and "\n" not in str(info.value)


# A value for every option that only some tasks take (dip_core.problem.task_options.TAKEN_BY).
FOR_SOME_TASKS = {
    "mask": np.ones((37, 45), np.float32),
    "mask_color": "red",
    "strict_mask": True,
    "keep_known": True,
    "drop": 0.5,
    "factor": 4,
    "kernel": "box:3",
    "noise_sigma": 25.0,
    "peak": 30.0,
    "fit_level_db": 40.0,
}


@pytest.mark.parametrize("task", [t.value for t in Task])
def test_the_api_refuses_every_option_the_task_does_not_use(task):
    assert set(FOR_SOME_TASKS) == set(TAKEN_BY)
    refused = [o for o in FOR_SOME_TASKS if not takes(task, o)]
    assert refused  # every task leaves some out
    for option in refused:
        with pytest.raises(UserError) as info:
            restore(task, synthetic(37, 45), **{option: FOR_SOME_TASKS[option]}, **TINY)
        message = str(info.value)
        assert f"{task} does not use {flag(option)}" in message and "\n" not in message
        assert all(t.value in message for t in TAKEN_BY[option])  # it names the tasks that take it
