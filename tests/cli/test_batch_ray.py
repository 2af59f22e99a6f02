"""`dip batch --engine ray` and `--shard`: the Ray engine writes what the local engine writes, a worker that
dies is retried, shards cover a folder exactly once, and without Ray the engine says how to install it.

The Ray tests share one local Ray instance of 2 CPUs (the engine joins it rather than starting its own); they
are marked `ray` and skipped, with the reason, where Ray is not installed. The others run anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import subprocess
import sys

import pytest
from PIL import Image as PILImage

from cli import app
from dip_cli.batch_ray import CRASH_ONCE_VAR
from dip_cli.shard import Shard, ShardError
from dip_core.problem.degrade import add_noise
from tests.common import TINY_NET_ARGS, runner
from tests.conftest import BACKENDS
from tests.images import synthetic, to_u8


def _have_ray() -> bool:
    """Whether Ray is installed, found without importing it (the whole suite collects this module)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: made unimportable
        return False


HAVE_RAY = _have_ray()


def needs_ray(test):
    """A test on the local Ray instance: marked `ray` (pytest -m "not ray" leaves it out), and skipped, with the
    reason, where Ray is not installed."""
    skip = pytest.mark.skipif(not HAVE_RAY, reason='ray is not installed (pip install -e ".[ray]")')
    return pytest.mark.ray(skip(test))


needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="the engines are compared on torch's CPU")
# The same settings for both engines; one thread, since the thread count changes a result's last bits.
RUN = ["-b", "torch", "--device", "cpu", "--iters", "3", *TINY_NET_ARGS, "--threads", "1"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance of 2 CPUs (and no GPU) for this module's Ray tests, shut down after them."""
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def batch(src, out, *extra):
    result = runner.invoke(app, ["batch", "denoise", str(src), "--out", str(out), *RUN, *extra])
    return result, " ".join(result.output.split())


def summary(out, name="summary.json"):
    return json.loads((out / name).read_text())


def rows(out, name="summary.json"):
    return {r["image"]: r for r in summary(out, name)["images"]}


def folder(tmp_path, n=4, broken=True):
    """`n` small noisy images (24x20), and a corrupt PNG."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(n):
        PILImage.fromarray(to_u8(add_noise(synthetic(20, 24, seed=k), 25, k))).save(src / f"img{k}.png")
    if broken:
        (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return src


def pngs(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


@needs_ray
@needs_torch
def test_ray_writes_what_the_local_engine_writes_and_carries_on_past_a_corrupt_file(tmp_path, ray_cluster):
    src = folder(tmp_path)
    local, text = batch(src, tmp_path / "local")
    assert local.exit_code == 1, text
    remote, text = batch(src, tmp_path / "ray", "--engine", "ray")
    assert remote.exit_code == 1, text
    assert "1 of 5 images failed" in text
    expected = {f"img{k}.denoise.png" for k in range(4)}
    assert set(pngs(tmp_path / "ray")) == set(pngs(tmp_path / "local")) == expected
    assert pngs(tmp_path / "ray") == pngs(tmp_path / "local")  # bit for bit
    for k in range(4):  # the same record: either engine's results are the other's to skip
        reports = [json.loads((tmp_path / e / f"img{k}.denoise.json").read_text()) for e in ("local", "ray")]
        assert reports[0]["batch"] == reports[1]["batch"]
    ray_rows, local_rows = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert summary(tmp_path / "ray")["engine"] == "ray" and summary(tmp_path / "local")["engine"] == "local"
    assert {n: r["status"] for n, r in ray_rows.items()} == {n: r["status"] for n, r in local_rows.items()}
    assert ray_rows["broken.png"]["status"] == "failed" and "\n" not in ray_rows["broken.png"]["error"]
    assert "cannot read" in ray_rows["broken.png"]["error"]
    assert ray_rows["broken.png"]["attempts"] == 1  # a user error is not retried
    for name in ("img0.png", "img3.png"):
        assert ray_rows[name]["status"] == "done" and ray_rows[name]["node_id"] and ray_rows[name]["attempts"] == 1
        assert ray_rows[name]["hostname"] == local_rows[name]["hostname"] == socket.gethostname()
        assert local_rows[name]["node_id"] is None and ray_rows[name]["seconds"] > 0
    again, _ = batch(src, tmp_path / "local", "--engine", "ray")  # resumes the local engine's batch
    assert again.exit_code == 1
    assert {n: r["status"] for n, r in rows(tmp_path / "local").items()} == {
        **{f"img{k}.png": "skipped" for k in range(4)},
        "broken.png": "failed",
    }


@needs_ray
@needs_torch
def test_a_worker_that_dies_is_retried_once(tmp_path, ray_cluster, monkeypatch):
    src, out, marker = folder(tmp_path, n=2, broken=False), tmp_path / "out", tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_VAR, str(marker))
    result, text = batch(src, out, "--engine", "ray")
    assert result.exit_code == 0, text
    crashed = marker.read_text()  # the image whose first worker killed itself
    assert crashed in {"img0.png", "img1.png"}
    by_image = rows(out)
    assert {n: (r["status"], r["attempts"]) for n, r in by_image.items()} == {
        "img0.png": ("done", 2 if crashed == "img0.png" else 1),
        "img1.png": ("done", 2 if crashed == "img1.png" else 1),
    }
    assert set(pngs(out)) == {"img0.denoise.png", "img1.denoise.png"}
    assert not list(out.glob(".*.tmp"))


@needs_ray
@pytest.mark.parametrize("extra", [["--cpus-per-run", "3"], ["--gpus-per-run", "0.25"]])
def test_a_run_that_fits_on_no_node_is_refused(tmp_path, ray_cluster, extra):
    src = folder(tmp_path, n=1, broken=False)
    result, text = batch(src, tmp_path / "out", "--engine", "ray", *extra)
    assert result.exit_code == 2
    assert "error: no node of the Ray cluster fits a run of --cpus-per-run" in text
    assert "(the largest node: 2 CPUs, 0 GPUs)" in text
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [0, 1, 4, 7, 12])
def test_shards_cover_a_list_exactly_once(count, size):
    items = [f"img{k:02d}.png" for k in range(size)]
    parts = [Shard(i, count).pick(items) for i in range(count)]
    assert sorted(x for part in parts for x in part) == items
    assert sum(len(part) for part in parts) == size  # no item twice
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [Shard.parse(f"{i}/{count}").pick(items) for i in range(count)]


@pytest.mark.parametrize("text", ["2/2", "5/3", "0/0", "-1/2", "1", "a/b", "1/2/3", ""])
def test_a_bad_shard_is_refused_in_one_line(text):
    with pytest.raises(ShardError) as caught:
        Shard.parse(text)
    assert "\n" not in str(caught.value) and "SLURM_ARRAY_TASK_MIN" in str(caught.value)


@needs_torch
def test_two_shards_restore_a_folder_exactly_once(tmp_path):
    src, out = folder(tmp_path, n=3, broken=False), tmp_path / "out"
    for i in range(2):
        result, text = batch(src, out, "--shard", f"{i}/2")
        assert result.exit_code == 0, text
        assert f"shard {i}/2: {2 - i} of the 3 images" in text
    first, second = rows(out, "summary.shard-0-of-2.json"), rows(out, "summary.shard-1-of-2.json")
    assert set(first) == {"img0.png", "img2.png"} and set(second) == {"img1.png"}
    assert all(r["status"] == "done" for r in [*first.values(), *second.values()])
    assert set(pngs(out)) == {f"img{k}.denoise.png" for k in range(3)}
    assert summary(out, "summary.shard-1-of-2.json")["shard"] == "1/2"
    bad, text = batch(src, out, "--shard", "2/2")
    assert bad.exit_code == 2 and text.startswith("error: --shard 2/2: the index counts from 0")


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    src, out = folder(tmp_path, n=1, broken=False), tmp_path / "out"
    result, text = batch(src, out, "--engine", "ray")
    assert result.exit_code == 2
    assert text == 'error: --engine ray needs Ray, an optional extra of dip: pip install -e ".[ray]"'
    assert not out.exists()


def test_ray_options_need_the_ray_engine(tmp_path):
    src = folder(tmp_path, n=1, broken=False)
    result, text = batch(src, tmp_path / "out", "--cpus-per-run", "2", "--address", "auto")
    assert result.exit_code == 2 and text == "error: --address, --cpus-per-run are for --engine ray"


def test_dip_does_not_import_ray_until_the_ray_engine_runs():
    code = "import sys, cli, dip_core.run.api, dip_cli.batch, dip_cli.batch_ray; print('ray' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "False"
