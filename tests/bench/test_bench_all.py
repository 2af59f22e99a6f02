"""`dip bench all`: one machine's file, its sections, Ctrl-C keeping what finished, quality over seeds."""

from __future__ import annotations

import json

import pytest

from bench.machine import AllSettings, Job, MachineRun, Plan, file_name, sustained_summary
from bench.quality import seed_statistics
from cli import app
from tests.common import positive, runner
from tests.conftest import BACKENDS, BOTH


@pytest.fixture(scope="module")
def machine_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("all") / "this-machine.json"
    args = ["bench", "all", "--size", "40", "--size", "45", "--seeds", "2", "--profile", "smoke", "--config", "tiny",
            "--sustained", "1.5", "--sustained-size", "40", "--out", str(path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return path, result.output


def test_one_file_describes_the_machine_and_the_run(machine_file):
    path, output = machine_file
    data = json.loads(path.read_text())
    assert data["kind"] == "machine" and data["schema_version"] == 1 and data["finished"] is True
    m = data["machine"]
    assert m["label"] and m["chip"] and positive(m["memory_gib"]) and m["os"] and m["cores"] >= 1
    sw = data["software"]
    assert sw["dip"] and sw["python"] and all(sw[b] for b in BACKENDS)
    assert data["settings"]["sizes"] == [40, 45] and data["settings"]["seeds"] == 2
    assert data["command"].startswith("dip bench all ")
    assert "bench/results/machines/" in output and "pull request" in output


def test_speed_rows_cover_every_backend_size_and_kind(machine_file):
    data = json.loads(machine_file[0].read_text())
    got = {(r["backend"], r["size"], r["kind"]) for r in data["speed"]}
    assert got == {(b, s, k) for b in BACKENDS for s in (40, 45) for k in ("step", "loop")}
    for r in data["speed"]:
        assert r["device"] in ("cpu", "gpu") and positive(r["ms_per_iter"]) and positive(r["gflops_per_s"])
        assert r["ms_min"] <= r["ms_per_iter"] <= r["ms_max"]
        assert r["kind"] == "loop" or positive(r["peak_memory_bytes"])  # the loop's process also holds a step
    assert set(data["matmul_gflops"]) == {f"{b}/cpu" for b in BACKENDS}
    assert data["skipped"] == []


def test_quality_over_seeds_and_the_crosscheck(machine_file):
    data = json.loads(machine_file[0].read_text())
    q = data["quality"]
    cases = {"scene-denoise-s25", "scene-inpaint", "scene-sr4"}
    assert {(r["case"], r["backend"], r["seed"]) for r in q["rows"]} == {
        (c, b, s) for c in cases for b in BACKENDS for s in (0, 1)
    }
    assert {(s["case"], s["backend"]) for s in q["summary"]} == {(c, b) for c in cases for b in BACKENDS}
    assert all(s["n"] == 2 and s["std"] is not None for s in q["summary"])
    if BOTH:
        assert {d["case"] for d in q["differences"]} == cases
        c = data["crosscheck"]
        assert c["config"] == "tiny" and c["passed"] and c["verdict"] in ("met", "noise")
    s = data["sustained"]
    assert s["backend"] == BACKENDS[0] and s["seconds"] >= 1.5 and len(s["samples"]) >= 2
    assert positive(s["first_minute_ms"]) and positive(s["last_minute_ms"])


def test_ctrl_c_keeps_what_finished(tmp_path):
    path = tmp_path / "m.json"
    run = MachineRun(AllSettings(sizes=(40,), backends=(BACKENDS[0],)), path, "dip bench all")

    def first() -> None:
        run.data["speed"].append({"backend": BACKENDS[0], "size": 40, "kind": "step", "ms_per_iter": 1.0})

    def second() -> None:
        raise KeyboardInterrupt

    never = []
    plan = Plan([Job("first", 1, first), Job("second", 1, second), Job("third", 1, lambda: never.append(1))])
    with pytest.raises(KeyboardInterrupt):
        run.run(plan)
    data = json.loads(path.read_text())
    assert data["finished"] is False and len(data["speed"]) == 1 and not never


def test_bad_options_are_one_line_errors(tmp_path):
    for args, words in (
        (["--size", "20"], "too small"),
        (["--profile", "paper"], "quality profile"),
        (["--data", str(tmp_path / "nowhere")], "no image folder"),
        (["--out", str(tmp_path / "x.txt")], "must end in .json"),
        (["--out", str(tmp_path / "missing" / "x.json")], "no folder"),
        (["--config", "nonet"], "nonet"),
    ):
        result = runner.invoke(app, ["bench", "all", *args])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, args


def test_the_file_is_named_after_the_machine_and_the_day():
    name = file_name({"label": "Apple M3 Pro (14-core GPU)"}, "2026-11-26T16:40:00+00:00")
    assert name == "apple-m3-pro-14-core-gpu-2026-11-26T1640.json"


def test_sustained_summary_compares_the_first_and_last_minute():
    samples = [[t, 10.0 if t <= 60 else 12.0 if t < 240 else 15.0] for t in range(1, 301)]
    s = sustained_summary(samples, 300.0)
    assert s["first_minute_ms"] == 10.0 and s["last_minute_ms"] == 15.0 and s["window_s"] == 60.0
    short = sustained_summary([[0.5, 4.0], [1.0, 6.0]], 1.0)  # under two minutes: halves
    assert short["first_minute_ms"] == 4.0 and short["last_minute_ms"] == 6.0


def test_seed_statistics_mark_a_difference_whose_interval_leaves_out_zero():
    rows = [{"case": "a", "backend": "mlx", "psnr_result": v} for v in (30.0, 30.2, 29.9, 30.1)]
    rows += [{"case": "a", "backend": "torch", "psnr_result": v} for v in (29.0, 29.1, 28.9, 29.2)]
    rows += [{"case": "b", "backend": "mlx", "psnr_result": v} for v in (30.0, 31.0, 29.0)]
    rows += [{"case": "b", "backend": "torch", "psnr_result": v} for v in (30.5, 29.5, 30.0)]
    stats = seed_statistics(rows)
    by_case = {d["case"]: d for d in stats["differences"]}
    assert by_case["a"]["finding"] and by_case["a"]["ci95"][0] > 0
    assert by_case["a"]["mlx_minus_torch"] == pytest.approx(30.05 - 29.05)
    assert not by_case["b"]["finding"] and by_case["b"]["ci95"][0] < 0 < by_case["b"]["ci95"][1]
    mlx_a = next(s for s in stats["summary"] if (s["case"], s["backend"]) == ("a", "mlx"))
    assert mlx_a["n"] == 4 and mlx_a["mean"] == pytest.approx(30.05)


def test_bench_quality_over_seeds_on_the_builtin_cases(tmp_path):
    args = ["bench", "quality", "--profile", "smoke", "--seeds", "2", "--case", "scene-denoise-s25", "--out", "",
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seeds"] == [0, 1] and len(data["rows"]) == 2 * len(BACKENDS)
    assert {s["backend"] for s in data["summary"]} == set(BACKENDS)
    assert "over 2 seeds" in result.stderr
    for row in data["rows"]:  # each row says what `dip run` would have said of the same run, and prints it
        assert row["summary"].startswith(f"denoise on {row['backend']} ({row['device']}")
        assert f"scene-denoise-s25 seed {row['seed']}: {row['summary']}" in " ".join(result.stderr.split())
    result = runner.invoke(app, ["bench", "quality", "--case", "kate-inpaint", "--out", ""])
    assert result.exit_code == 2 and "need the paper's images" in result.output


def test_seed_statistics_pair_the_backends_over_shared_seeds():
    """A seed fixes the input for both backends: with the same seeds the interval is over the per-seed differences,
    which an input-driven spread does not widen."""
    rows = []
    for seed, base in enumerate((25.0, 28.0, 31.0, 27.0)):  # the inputs differ a lot; MLX is 0.2 dB above each time
        rows.append({"case": "a", "backend": "mlx", "seed": seed, "psnr_result": base + 0.2 + 0.01 * seed})
        rows.append({"case": "a", "backend": "torch", "seed": seed, "psnr_result": base})
    d = seed_statistics(rows)["differences"][0]
    assert d["test"] == "paired" and d["finding"] and 0.15 < d["ci95"][0] < d["ci95"][1] < 0.25
    welch = seed_statistics([{k: v for k, v in r.items() if k != "seed"} for r in rows])["differences"][0]
    assert welch["test"] == "welch" and not welch["finding"]  # the spread of the inputs swamps 0.2 dB
