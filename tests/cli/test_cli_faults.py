"""`dip run` under the faults of issue 21: a second signal during the rescue of the first, a full disk at a
checkpoint or at an intermediate save, pixels that are not numbers, hand-made checkpoints, a photo given as the
mask. Each is a one-line message (or a warning) and never a traceback; nothing the run had is lost."""

from __future__ import annotations

import errno
import json
import signal
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

import dip_core.fit.loop
import dip_core.run.api
from cli import app
from tests.common import TINY_NET_ARGS, runner

FAST = [*TINY_NET_ARGS, "--device", "cpu", "-q"]


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def ctrl_c_at(n: int, process):
    """`_Loop.process` with one Ctrl-C as step n is booked."""
    pressed = []

    def booked(self, i, *args):
        if i == n and not pressed:
            pressed.append(i)
            raise KeyboardInterrupt
        return process(self, i, *args)

    return booked


def one_clean_line(result) -> None:
    assert "Traceback" not in result.output and "Error:" not in result.output.replace("error:", ""), result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_never_discards_the_rescue_of_the_first(noisy, monkeypatch, sig):
    """Issue 21, 5: two signals in quick succession: the first at step 8, the second while the run's result is
    being chosen. The result so far is still written, and the run says it was interrupted."""
    process, choose = dip_core.fit.loop._Loop.process, dip_core.fit.loop.choose

    def signalled_at_8(self, i, *args):
        if i == 8:
            signal.raise_signal(sig)
        return process(self, i, *args)

    def second_signal(*args, **kwargs):
        signal.raise_signal(sig)  # while the first one's rescue is under way
        return choose(*args, **kwargs)

    monkeypatch.setattr(dip_core.fit.loop._Loop, "process", signalled_at_8)
    monkeypatch.setattr(dip_core.fit.loop, "choose", second_signal)
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--iters", "30", *FAST])
    assert result.exit_code == 130, result.output
    assert "nothing was written" not in result.output and "interrupted after" in result.output
    assert (noisy.parent / "cat.denoise.png").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back


def test_a_checkpoint_that_does_not_fit_on_the_disk_is_a_warning(noisy, monkeypatch):
    """Issue 21, 6: the first checkpoint is written, the later ones find the disk full: the run goes on to its
    result, warned; and an interrupted run resumes from the checkpoint that was written."""
    real, calls = dip_core.fit.loop.save_checkpoint, []

    def first_fits(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            full_disk()
        real(*args, **kwargs)

    monkeypatch.setattr(dip_core.fit.loop, "save_checkpoint", first_fits)
    args = ["run", "denoise", str(noisy), "--iters", "20", "--checkpoint-every", "5", *FAST]
    report = noisy.parent / "r.json"
    result = runner.invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    one_clean_line(result)
    assert "could not write the checkpoint" in result.output and "No space left" in result.output
    assert (noisy.parent / "cat.denoise.png").is_file() and json.loads(report.read_text())["iters"] == 20

    calls.clear()
    process = dip_core.fit.loop._Loop.process

    monkeypatch.setattr(dip_core.fit.loop._Loop, "process", ctrl_c_at(12, process))
    stopped = runner.invoke(app, [*args, "--force"])
    assert stopped.exit_code == 130 and "--resume" in stopped.output, stopped.output
    monkeypatch.setattr(dip_core.fit.loop._Loop, "process", process)
    resumed = runner.invoke(app, [*args, "--resume"])  # from iteration 5, the disk still full for the rest
    assert resumed.exit_code == 0, resumed.output
    one_clean_line(resumed)


def test_an_intermediate_save_that_fails_is_a_warning(noisy, monkeypatch, tmp_path):
    """Issue 21, 7: --save-every on a full disk: the run goes on, and its result and report are written."""
    import dip_cli.run

    real = dip_cli.run._save_so_far

    def no_room_for_the_intermediate(path, image, **kwargs):
        full_disk()

    monkeypatch.setattr(dip_cli.run, "_save_so_far", no_room_for_the_intermediate)
    report = tmp_path / "elsewhere" / "r.json"
    report.parent.mkdir()
    result = runner.invoke(app, ["run", "denoise", str(noisy), "--iters", "12", "--save-every", "4", *FAST,
                                 "--report", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    one_clean_line(result)
    assert "could not write the result so far" in result.output
    assert (noisy.parent / "cat.denoise.png").is_file() and report.is_file()
    assert real is not None


def float_tiff(path, value: float):
    pixels = np.full((16, 20), 0.5, np.float32)
    pixels[3:6, 4:9] = value
    PILImage.fromarray(pixels, mode="F").save(path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_image_of_non_finite_pixels_is_refused_in_one_line(tmp_path, value):
    """Issue 21, 8: a float TIFF holding NaN or infinity."""
    path = float_tiff(tmp_path / "odd.tiff", value)
    result = runner.invoke(app, ["run", "denoise", str(path), "--iters", "3", *FAST])
    assert result.exit_code == 2, result.output
    one_clean_line(result)
    assert "not finite" in result.output and len(result.output.strip().splitlines()) == 1


def make_checkpoint(noisy, tmp_path) -> tuple[list[str], object]:
    """A real checkpoint of a stopped run: the arguments to resume it, and its path."""
    process = dip_core.fit.loop._Loop.process
    args = ["run", "denoise", str(noisy), "--iters", "12", "--checkpoint-every", "5", *FAST]
    dip_core.fit.loop._Loop.process = ctrl_c_at(7, process)
    try:
        assert runner.invoke(app, args).exit_code == 130
    finally:
        dip_core.fit.loop._Loop.process = process
    return [*args, "--resume"], noisy.parent / "cat.denoise.ckpt.npz"


def rewrite(ckpt, change) -> None:
    """Rewrite a checkpoint's arrays through `change(arrays, meta)`."""
    with np.load(ckpt, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    meta = change(arrays, meta)
    with open(ckpt, "wb") as fh:
        np.savez(fh, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def drop(prefix):
    def change(arrays, meta):
        for k in [k for k in arrays if k.startswith(prefix)]:
            del arrays[k]
        return meta

    return change


def reshape(prefix):
    def change(arrays, meta):
        for k in [k for k in arrays if k.startswith(prefix)]:
            arrays[k] = np.zeros((3, *arrays[k].shape), arrays[k].dtype)
        return meta

    return change


def retype(name, value):
    def change(arrays, meta):
        arrays[name] = value
        return meta

    return change


HAND_MADE = {
    "meta not an object": lambda arrays, meta: ["dip-checkpoint/3"],
    "meta run not an object": lambda arrays, meta: {**meta, "run": "x"},
    "no session arrays": drop("session/"),
    "no snapshot arrays": drop("snap/"),
    "no progress": drop("loop/progress"),
    "no curves": drop("curves/"),
    "wrong shapes in the session": reshape("session/"),
    "wrong shapes in the snapshot": reshape("snap/"),
    "progress of strings": retype("loop/progress", np.array(["a", "b"])),
    "progress too short": retype("loop/progress", np.array([3.0])),
    "progress past the end": retype("loop/progress", np.array([1e9, 1.0])),
    "curves of another length": retype("curves/losses", np.zeros((2, 2))),
    "every of another kind": retype("checkpoint/every", np.array("five")),
}


@pytest.mark.parametrize("case", HAND_MADE)
def test_a_hand_made_checkpoint_is_refused_in_one_line(noisy, tmp_path, case):
    """Issue 21, 10: a valid zip with a wrong meta, wrong shapes, missing or odd arrays."""
    args, ckpt = make_checkpoint(noisy, tmp_path)
    rewrite(ckpt, HAND_MADE[case])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (case, result.output, repr(result.exception))
    one_clean_line(result)
    assert "checkpoint" in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_checkpoint_that_is_a_zip_of_something_else_is_refused(noisy, tmp_path):
    args, ckpt = make_checkpoint(noisy, tmp_path)
    with zipfile.ZipFile(ckpt, "w") as zf:
        zf.writestr("__meta__.npy", b"not an array")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not a readable dip checkpoint" in result.output, result.output


def test_a_mask_that_is_mostly_grey_is_refused_but_soft_edges_are_rounded(noisy, tmp_path):
    """Issue 21, the mask: a photo given as the mask (90 % grey) is refused; a few anti-aliased edge pixels are
    still rounded, with a warning."""
    photo = np.full((21, 25), 128, np.uint8)
    photo[:2] = 255  # 10 % of it black or white
    PILImage.fromarray(photo).save(tmp_path / "photo_mask.png")
    args = ["run", "inpaint", str(noisy), "--iters", "2", *FAST]
    result = runner.invoke(app, [*args, "--mask", str(tmp_path / "photo_mask.png")])
    assert result.exit_code == 2, result.output
    assert "mostly grey" in result.output and len(result.output.strip().splitlines()) == 1
    edges = np.full((21, 25), 255, np.uint8)
    edges[5:10, 5:10] = 0
    edges[4, 5:10] = 128  # a soft edge
    PILImage.fromarray(edges).save(tmp_path / "edges_mask.png")
    result = runner.invoke(app, [*args, "--mask", str(tmp_path / "edges_mask.png")])
    assert result.exit_code == 0 and "rounded at 50 %" in " ".join(result.output.split()), result.output


def test_a_signal_once_the_command_is_over_ends_the_process_quietly(monkeypatch):
    """Issue 21, cosmetics: a second signal after the outputs are written (Python shutting down) is no
    "Exception ignored in atexit" message: the process ends at once."""
    import cli

    monkeypatch.setattr(cli, "app", lambda: None)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli.main()
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler) and handler is not signal.default_int_handler
        assert handler.__qualname__.startswith("quiet_after_exit") and signal.getsignal(signal.SIGTERM) is handler
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_memory_refusal_names_the_image_size_not_the_padded_one(tmp_path, monkeypatch):
    """Issue 21, cosmetics: a 61x41 image (padded to 64x44 for the network) is reported as 61x41."""
    from tests.conftest import BACKENDS

    backend = BACKENDS[0]
    module = __import__("dip_core.run.memory", fromlist=["available_bytes"])
    monkeypatch.setattr(module, "available_bytes", lambda: 50 * 2**20)
    PILImage.fromarray(np.zeros((41, 61), np.uint8)).save(tmp_path / "odd.png")
    result = runner.invoke(app, ["run", "denoise", str(tmp_path / "odd.png"), "-b", backend, "--iters", "2", *FAST])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "a 61x41 image" in text and "64x44" not in text and "--tile" in text  # the command line's own advice
