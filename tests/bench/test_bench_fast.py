"""`python -m bench.fast`: both methods run a case end to end as a user runs them, and the table puts them side
by side with DRP's time share and PSNR gap (timings are never judged here, only the table's arithmetic)."""

from __future__ import annotations

import json

import pytest

from bench import fast
from bench.quality import BUILTIN_CASES

INPAINT = next(c for c in BUILTIN_CASES if c.task == "inpaint")


@pytest.mark.parametrize("method", fast.METHODS)
def test_a_fixed_case_runs_each_method(backend, method):
    row = fast.run_one(INPAINT, method, backend.name, 24, 0, max_iters=3)
    assert row["method"] == method and row["iters"] == 3 and row["stop"] == "fixed"
    assert row["wall_seconds"] >= row["fit_seconds"] > 0
    named = " with drp" if method == "drp" else ""  # the summary names a method other than the paper's
    assert row["psnr_user"] is not None and row["summary"].startswith(f"inpaint{named} on {backend.name}")


def rows(task: str, dip: tuple[float, float], drp: tuple[float, float], seeds: int = 2) -> list[dict]:
    made = []
    for seed in range(seeds):
        for method, (seconds, db) in (("dip", dip), ("drp", drp)):
            made.append({"case": f"c-{task}", "task": task, "method": method, "backend": "mlx", "seed": seed,
                         "stop": "auto", "iters": 100, "wall_seconds": seconds, "psnr_user": db + 0.1 * seed,
                         "psnr_input": 20.0})  # fmt: skip
    return made


def test_the_summary_judges_denoising_against_the_target():
    met, missed = fast.summarise(rows("denoise", (100.0, 30.0), (10.0, 29.7)) + rows("sr", (100.0, 25.0), (50.0, 24.0)))
    assert met["time_share"] == pytest.approx(0.1) and met["gap_db"] == pytest.approx(-0.3) and met["target_met"]
    assert missed["target_met"] is None  # another task: its figures stated, not judged
    slow = fast.summarise(rows("denoise", (100.0, 30.0), (30.0, 30.0)))[0]
    worse = fast.summarise(rows("denoise", (100.0, 30.0), (10.0, 29.0)))[0]
    assert not slow["target_met"] and not worse["target_met"]


def test_the_table_of_a_recorded_result(tmp_path, capsys):
    data = {"date": "2026-12-05T10:00:00", "fingerprint": {"cpu": "Test CPU", "cores": 2},
            "settings": {"size": 64, "seeds": 2, "max_iters": 1000, "device": "cpu"},
            "rows": rows("denoise", (100.0, 30.0), (10.0, 29.7))}  # fmt: skip
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(data))
    fast.main(["--show", str(path)])
    table = capsys.readouterr().out
    assert (
        "| c-denoise | mlx | auto | 20.00 | 100, 100.0, 30.05 | 100, 10.0, 29.75 | 0.100 (0.100-0.100) "
        "| -0.30 ± 0.00 | met |" in table
    )


def test_a_run_writes_its_file_as_it_goes(backend, tmp_path):
    out = tmp_path / "fast.json"
    data = fast.run([INPAINT], [backend.name], 24, 1, 2, out)
    kept = json.loads(out.read_text())
    assert kept["finished"] and len(kept["rows"]) == len(fast.METHODS) == len(data["rows"])
    assert "Stopped part-way" not in fast.markdown(kept)
    assert "Stopped part-way" in fast.markdown({**kept, "finished": False})


def test_sr_stops_names_where_the_fit_level_stops_and_what_it_loses():
    loss = [1.0] * 30 + [1e-5] * 30  # the mean of 20 reaches 1e-4 (40 dB) at step 50
    psnr = [20.0] * 49 + [24.5] + [25.0] * 10
    data = {
        "curves": [{"photo": "a", "loss": loss, "psnr": psnr}, {"photo": "b", "loss": [1.0] * 40, "psnr": [9.0] * 40}]
    }
    assert fast.sr_stops(data) == [
        "a: stops at 50 (24.50 dB), 0.50 dB under the best, 25.00 dB at iteration 51 of 60",
        "b: never stops; the best, 9.00 dB at iteration 1 of 40",
    ]


def test_sr_curves_records_every_step_and_show_prints_the_stops(tmp_path, capsys):
    out = tmp_path / "curves.json"
    data = fast.sr_curves(["camera"], 32, 3, "torch", out)
    kept = json.loads(out.read_text())
    assert kept == json.loads(json.dumps(data)) and kept["kind"] == "drp-sr-curves"
    assert len(kept["curves"][0]["loss"]) == len(kept["curves"][0]["psnr"]) == 3
    fast.main(["--show", str(out)])
    assert "camera: never stops" in capsys.readouterr().out
