"""`dip batch` through the CLI: output names, the settings record that makes reruns safe, and exit codes."""

from __future__ import annotations

import hashlib
import json
import tempfile

import pytest
from PIL import Image as PILImage

from cli import app
from dip_core.problem.degrade import add_noise, text_mask
from tests.common import TINY_NET_ARGS, runner
from tests.conftest import BACKENDS
from tests.images import save, synthetic, to_u8

BACKEND = BACKENDS[0]


def noisy(path, h=11, w=13, seed=1):
    """A small noisy image of odd size."""
    return save(path, add_noise(synthetic(h, w, seed=seed), 25, seed))


def batch(src, out, *extra, task="denoise", iters=3, backend=BACKEND):
    args = ["batch", task, str(src), "--out", str(out), "--iters", str(iters), "--device", "cpu", "-b", backend]
    result = runner.invoke(app, [*args, *TINY_NET_ARGS, *extra])
    return result, " ".join(result.output.split())


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(out, name):
    return json.loads((out / name).read_text())["batch"]


def statuses(out):
    return {r["image"]: r["status"] for r in json.loads((out / "summary.json").read_text())["images"]}


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def src(tmp_path):
    """a.png and a.jpg share a stem; b.png does not."""
    folder = tmp_path / "in"
    folder.mkdir()
    noisy(folder / "a.png")
    PILImage.fromarray(to_u8(add_noise(synthetic(15, 17, seed=2), 25, 2))).save(folder / "a.jpg", quality=90)
    noisy(folder / "b.png", 15, 17, seed=3)
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_sharing_a_stem_are_all_restored_and_a_rerun_skips_them(tmp_path, src, backend):
    out = tmp_path / "out"
    result, text = batch(src, out, backend=backend)
    assert result.exit_code == 0, result.output
    assert "a.jpg -> a.jpg.denoise.png, a.png -> a.png.denoise.png" in text
    assert statuses(out) == {"a.jpg": "done", "a.png": "done", "b.png": "done"}
    for image, output in [
        ("a.png", "a.png.denoise.json"),
        ("a.jpg", "a.jpg.denoise.json"),
        ("b.png", "b.denoise.json"),
    ]:
        rec = record(out, output)
        assert rec["input"] == {"name": image, "bytes": (src / image).stat().st_size, "sha256": sha(src / image)}
        assert rec["task"] == "denoise" and rec["settings"]["iters"] == 3 and rec["settings"]["threads"] == 1
    assert (out / "a.png.denoise.png").exists() and (out / "a.jpg.denoise.png").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    before = snapshot(out)
    again, _ = batch(src, out, "--threads", "1", backend=backend)  # the count a batch runs without --threads
    assert again.exit_code == 0, again.output
    assert set(statuses(out).values()) == {"skipped"}
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "summary.json"} == {
        k: v for k, v in before.items() if k != "summary.json"
    }


def test_a_batch_runs_one_thread_per_fit_on_either_engine_and_records_it(tmp_path, src, monkeypatch):
    """Another thread count changes a result (issue 25: up to 12/255 between 2 and 1): a batch never takes it from the
    machine's load or DIP_THREADS, runs what Ray's default task (one CPU) runs, and a rerun with another count
    is told its results were made otherwise."""
    from dip_core.system.threads import THREADS_VAR

    monkeypatch.setenv(THREADS_VAR, "2")  # what a free 2-core machine would choose for a single run
    out = tmp_path / "out"
    # torch: a session sets its thread count; MLX's CPU-kernel pool keeps the size of the process's first run
    # (a fresh `dip batch` process starts it at 1; this test process may have started it earlier).
    result, _ = batch(src, out, backend="torch")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "b.denoise.json").read_text())
    assert report["threads"] == 1 and report["batch"]["settings"]["threads"] == 1
    from dip_cli.batch import batch_threads
    from dip_cli.batch_ray import RaySettings
    from dip_core.run.options import RunOptions

    assert batch_threads(RunOptions(), None) == batch_threads(RunOptions(), RaySettings()) == 1
    assert batch_threads(RunOptions(threads=3), RaySettings(cpus_per_run=2)) == 3
    other, text = batch(src, out, "--threads", "2", backend="torch")
    assert other.exit_code == 2 and "other settings" in text


def test_masks_are_not_inputs_and_are_recorded_with_the_result(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    m = text_mask(11, 13, 0)
    save(src / "a.png", synthetic(11, 13) * m + (1 - m))
    PILImage.fromarray(to_u8(synthetic(11, 13) * m + (1 - m))).save(src / "a.jpg", quality=95)
    save(src / "a_mask.png", m)
    result, _ = batch(src, out, task="inpaint")
    assert result.exit_code == 0, result.output
    assert statuses(out) == {"a.jpg": "done", "a.png": "done"}
    for name in ("a.png.inpaint.json", "a.jpg.inpaint.json"):
        assert record(out, name)["mask"]["sha256"] == sha(src / "a_mask.png")
    save(src / "a_mask.png", 1 - m)
    changed, text = batch(src, out, task="inpaint")
    assert changed.exit_code == 2 and "a_mask.png changed" in text and "2 outputs" in text


def test_a_batch_whose_task_takes_no_mask_leaves_the_masks_beside_its_images_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    noisy(src / "a.png")
    save(src / "a_mask.png", text_mask(11, 13, 0))  # left from an inpaint batch: denoise does not use a mask
    result, _ = batch(src, out)
    assert result.exit_code == 0, result.output
    assert statuses(out) == {"a.png": "done"} and record(out, "a.denoise.json")["mask"] is None


def test_an_option_the_task_does_not_use_stops_the_batch_before_any_work(tmp_path, src):
    out = tmp_path / "out"
    result, text = batch(src, out, "--factor", "4")
    assert result.exit_code == 2 and text.startswith("error: denoise does not use --factor (only sr takes it)")
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1 and not out.exists()


def test_references_are_matched_by_the_whole_file_name(tmp_path, src):
    refs, out = tmp_path / "refs", tmp_path / "out"
    refs.mkdir()
    save(refs / "a.png", synthetic(11, 13, seed=1))
    save(refs / "a.jpg", synthetic(15, 17, seed=2))
    save(refs / "b.png", synthetic(15, 17, seed=3))
    result, _ = batch(src, out, "--references", str(refs))
    assert result.exit_code == 0, result.output
    assert record(out, "a.png.denoise.json")["reference"]["sha256"] == sha(refs / "a.png")
    assert record(out, "a.jpg.denoise.json")["reference"]["sha256"] == sha(refs / "a.jpg")
    rows = json.loads((out / "summary.json").read_text())["images"]
    assert all(r["psnr"] is not None for r in rows)


def test_outputs_that_would_collide_are_refused_up_front(tmp_path, src):
    noisy(src / "a.png.jpg")  # its stem a.png gives a.png.denoise.png, like a.png's whole name
    result, text = batch(src, tmp_path / "out")
    assert result.exit_code == 2
    assert "a.png and a.png.jpg -> a.png.denoise.png" in text and "rename" in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_changed_setting_is_refused_before_any_work(tmp_path, src):
    out = tmp_path / "out"
    assert batch(src, out)[0].exit_code == 0
    before = snapshot(out)
    result, text = batch(src, out, iters=4)
    assert result.exit_code == 2
    assert text.startswith("error: 3 outputs in") and "(iters 3, now 4)" in text
    assert "a.jpg.denoise.png, a.png.denoise.png, b.denoise.png" in text and "--force" in text
    assert snapshot(out) == before


def test_a_changed_input_is_refused_and_named(tmp_path, src):
    out = tmp_path / "out"
    assert batch(src, out)[0].exit_code == 0
    noisy(src / "b.png", 15, 17, seed=9)
    result, text = batch(src, out)
    assert result.exit_code == 2
    assert "1 output in" in text and "(b.png changed): b.denoise.png;" in text


@pytest.mark.parametrize("report", [None, "{not json", '{"task": "denoise"}'])
def test_an_output_without_a_record_is_refused(tmp_path, src, report):
    """A result of an older dip, or one whose report is missing or broken, is not counted as done."""
    out = tmp_path / "out"
    out.mkdir()
    noisy(out / "b.denoise.png")
    if report is not None:
        (out / "b.denoise.json").write_text(report)
    result, text = batch(src, out)
    assert result.exit_code == 2
    assert "1 output in" in text and "no settings recorded" in text and "b.denoise.png" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(["b.denoise.png"] + (["b.denoise.json"] if report else []))


def test_force_redoes_every_image(tmp_path, src):
    out = tmp_path / "out"
    assert batch(src, out)[0].exit_code == 0
    result, _ = batch(src, out, "--force", iters=4)
    assert result.exit_code == 0, result.output
    assert set(statuses(out).values()) == {"done"}
    for name in ("a.png.denoise.json", "a.jpg.denoise.json", "b.denoise.json"):
        assert record(out, name)["settings"]["iters"] == 4
        assert json.loads((out / name).read_text())["iters"] == 4
    assert batch(src, out, iters=4)[0].exit_code == 0
    assert set(statuses(out).values()) == {"skipped"}


def test_a_failed_image_exits_1_after_the_summary(tmp_path, src):
    out = tmp_path / "out"
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result, text = batch(src, out)
    assert result.exit_code == 1, result.output
    assert "PSNR result" in text and "1 of 4 images failed" in text
    summary = statuses(out)
    assert summary["b.png"] == "done" and summary["broken.png"] == "failed"
    again, _ = batch(src, out)  # the others are done; the broken one fails again
    assert again.exit_code == 1 and statuses(out)["b.png"] == "skipped"


def test_an_interrupted_batch_goes_on_where_it_stopped(tmp_path, src, monkeypatch):
    import dip_core.run.api

    out, restore, calls = tmp_path / "out", dip_core.run.api.restore, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return restore(*args, **kwargs)

    monkeypatch.setattr(dip_core.run.api, "restore", interrupted_second)
    result, _ = batch(src, out)
    assert result.exit_code == 130
    assert statuses(out) == {"a.jpg": "done", "a.png": "interrupted", "b.png": "interrupted"}
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.denoise.json", "a.jpg.denoise.png", "summary.json"]
    monkeypatch.setattr(dip_core.run.api, "restore", restore)
    again, _ = batch(src, out)
    assert again.exit_code == 0, again.output
    assert statuses(out) == {"a.jpg": "skipped", "a.png": "done", "b.png": "done"}
    assert record(out, "a.jpg.denoise.json")["input"]["name"] == "a.jpg"


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, src, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result, text = batch(src, tmp_path / "out")
    assert result.exit_code == 2
    assert text.startswith(f"error: cannot write into the output folder {tmp_path / 'out'}: Permission denied")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_refused(tmp_path, src):
    (tmp_path / "file").write_text("")
    result, text = batch(src, tmp_path / "file" / "out")
    assert result.exit_code == 2
    assert text.startswith(f"error: cannot create the output folder {tmp_path / 'file' / 'out'}")


def test_the_input_folder_is_refused_as_output(tmp_path, src):
    result, text = batch(src, src)
    assert result.exit_code == 2 and "is the input folder" in text
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg", "a.png", "b.png"]


def test_each_report_names_the_command_and_the_version(src, tmp_path):
    from dip_core.system.version import dip_version

    out = tmp_path / "out"
    result, text = batch(src, out)
    assert result.exit_code == 0, text
    rep = json.loads((out / "b.denoise.json").read_text())
    assert rep["command"].startswith("dip batch denoise ") and rep["dip_version"] == dip_version()


def test_a_short_jpeg_batch_prints_the_runs_warnings(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(to_u8(synthetic(11, 13))).save(folder / "q.jpg", quality=30)
    result, text = batch(folder, tmp_path / "out", task="jpeg")
    assert result.exit_code == 0, text
    assert "warning: --iters 3 is far below" in text
