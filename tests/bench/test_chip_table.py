"""The chip table: the result schema and its checks, the FP32 peak table, the merged rows, the Markdown and HTML pages
and `dip bench report --html/--markdown`. Synthetic files only: fast, no backend runs."""

from __future__ import annotations

import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench import chip_table
from bench.peaks import APPLE, NVIDIA, peak_gflops, table_peak
from bench.schema import OtherKindError, SchemaError, load_folder, validate
from cli import app
from dip_core.errors import UserError
from tests.bench import chip_results as cr
from tests.common import ROOT, runner


@pytest.fixture
def folder(tmp_path):
    return cr.write_folder(tmp_path / "results")


class _Rows(HTMLParser):
    """The chip table's rows as parsed from the page: (machine, backend, device) -> {data-col: text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str, str], dict[str, str]] = {}
        self.svgs = 0
        self.ids: list[str] = []
        self._row: dict[str, str] | None = None
        self._col: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a and tag in ("table", "figure"):
            self.ids.append(a["id"])
        if tag == "svg":
            self.svgs += 1
        if tag == "tr" and a.get("class") == "row":
            self._row = self.rows.setdefault((a["data-machine"], a["data-backend"], a["data-device"]), {})
        elif tag == "td" and self._row is not None:
            self._col = a["data-col"]
            self._row[self._col] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._col = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._col is not None:
            self._row[self._col] += data


def parse(page: str) -> _Rows:
    parser = _Rows()
    parser.feed(page)
    return parser


def markdown_rows(md: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The chip table's rows in the Markdown page, by their header."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == len(header):
            row = dict(zip(header, cells, strict=True))
            if "backend" in row:
                rows[(row["machine"], row["backend"], row["device"])] = row
    return rows


# --- the schema ------------------------------------------------------------------------------------------------


def test_a_machine_result_validates_and_keeps_its_values():
    data = validate(cr.m3_pro(), "m3.json")
    assert data["schema_version"] == 1 and data["machine"]["gpu_cores"] == 18
    assert len(data["speed"]) == 12 and data["quality"]["rows"][0]["seed"] == 0
    assert data["sustained"]["last_minute_ms"] == 66.0 and data["crosscheck"]["passed"] is True


def test_optional_sections_may_be_absent_or_null():
    data = cr.xeon()
    for key in ("quality", "crosscheck", "sustained", "skipped", "command"):
        data.pop(key)
    data["machine"] = {"label": "x"}
    checked = validate(data, "x.json")
    assert checked["skipped"] == [] and checked["quality"] is None and checked["machine"]["gpu"] is None


def _broken(change) -> dict:
    data = copy.deepcopy(cr.m3_pro())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("kind"), "not a dip bench result (no 'kind')"),
        (lambda d: d.update(kind="banana"), "not a dip bench result (kind 'banana' with schema_version 1)"),
        (lambda d: d.update(kind=["machine"]), "not a dip bench result (kind ['machine'])"),
        (lambda d: d.update(schema_version=7), "schema_version 7 is newer than this dip reads (1): update dip"),
        (lambda d: d.update(schema_version=0), "schema_version 0 is not one this dip reads (1)"),
        (lambda d: d.update(schema_version=True), "schema_version True is not one this dip reads (1)"),
        (lambda d: d.update(schema_version="1"), "schema_version '1' is not one this dip reads (1)"),
        (lambda d: d.pop("schema_version"), "no schema_version"),
        (lambda d: d.pop("machine"), "machine is missing"),
        (lambda d: d.pop("date"), "date is missing"),
        (lambda d: d.update(finished="yes"), "finished is not true or false"),
        (lambda d: d.update(speed={}), "speed is not a list"),
        (lambda d: d["machine"].pop("label"), "machine.label is missing"),
        (lambda d: d["machine"].update(cores="eleven"), "machine.cores is not an integer"),
        (lambda d: d["machine"].update(gpu_cores=18.5), "machine.gpu_cores is not an integer"),
        (lambda d: d["software"].pop("dip"), "software.dip is missing"),
        (lambda d: d["speed"][3].update(ms_per_iter="fast"), "speed[3].ms_per_iter is not a number"),
        (lambda d: d["speed"][3].update(ms_per_iter=float("nan")), "speed[3].ms_per_iter is not a number"),
        (lambda d: d["speed"][3].update(ms_per_iter=-1.0), "speed[3].ms_per_iter is not a positive number"),
        (lambda d: d["speed"][3].update(ms_per_iter=True), "speed[3].ms_per_iter is not a number"),
        (lambda d: d["speed"][0].pop("backend"), "speed[0].backend is missing"),
        (lambda d: d["speed"][1].update(size="128"), "speed[1].size is not an integer"),
        (lambda d: d["speed"].append(3), "speed[12] is not an object"),
        (lambda d: d["matmul_gflops"].update({"mlx/gpu": "fast"}), "matmul_gflops.mlx/gpu is not a number"),
        (lambda d: d.update(quality=[]), "quality is not an object"),
        (lambda d: d["quality"]["rows"][2].update(psnr_result="28"), "quality.rows[2].psnr_result is not a number"),
        (lambda d: d["quality"]["differences"][0].update(ci95=[0.1]), "quality.differences[0].ci95 is not a pair"),
        (lambda d: d["crosscheck"].pop("passed"), "crosscheck.passed is missing"),
        (lambda d: d["sustained"]["samples"].append([1.0]), "sustained.samples[2] is not a pair of numbers"),
        (lambda d: d["skipped"].append({"backend": "mlx"}), "skipped[0].device is missing"),
    ],
)
def test_each_rule_is_one_line_naming_the_file_and_the_problem(change, message):
    with pytest.raises(SchemaError) as info:
        validate(_broken(change), "bench/results/machines/x.json")
    text = str(info.value)
    assert text.startswith("bench/results/machines/x.json: ") and message in text and "\n" not in text
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize("data", [[1, 2], "text", 3, None, {"hello": 1}])
def test_foreign_json_is_not_a_dip_bench_result(data):
    with pytest.raises(SchemaError, match=r"^f\.json: not a dip bench result \(no 'kind'\)$"):
        validate(data, "f.json")


def test_other_bench_kinds_say_what_prints_them():
    with pytest.raises(OtherKindError, match=r"a ladder result: `python -m bench\.ladder --show l\.json` prints it"):
        validate({"kind": "ladder", "fingerprint": {}, "rows": []}, "l.json")


def test_a_version_0_speed_file_becomes_a_machine_result():
    data = cr.epyc_v0()
    data["rows"][0]["device"] = "cuda"  # resolved device names of version 0 are dip's device kinds
    data["roofline_gflops"]["mlx/cuda"] = 900.0
    out = validate(data, "old.json")
    assert out["schema_version"] == 0 and out["kind"] == "machine" and out["finished"] is True
    assert out["machine"]["label"] == cr.EPYC and out["machine"]["arch"] == "x86_64"
    assert out["software"]["commit"] == "0718b0c"
    # step and loop rows of the default network only: forward, loop+ref and the small network stay out
    assert [(r["backend"], r["device"], r["kind"], r["size"]) for r in out["speed"]] == [
        ("mlx", "gpu", "step", 128),
        ("torch", "cpu", "step", 128),
    ]
    assert out["matmul_gflops"] == {"mlx/cpu": 204.0, "torch/cpu": 181.0, "mlx/gpu": 900.0}


def test_a_version_0_quality_file_becomes_quality_rows_of_seed_0():
    path = ROOT / "bench" / "results" / "20261124T093501-quality-amd-epyc-2-cores.json"
    out = validate(json.loads(path.read_text()), path)
    rows = out["quality"]["rows"]
    assert out["quality"]["profile"] == "quick" and out["speed"] == []
    assert len(rows) == 10 and {r["seed"] for r in rows} == {0} and {r["device"] for r in rows} == {"cpu"}


def test_a_version_0_file_needs_its_fingerprint_and_rows():
    with pytest.raises(SchemaError, match=r"old\.json: a speed result without a 'fingerprint'"):
        validate({"kind": "speed", "rows": []}, "old.json")
    bad = cr.epyc_v0()
    bad["rows"][0]["ms_per_iter"] = None
    with pytest.raises(SchemaError, match=r"old.json: rows\[0\]\.ms_per_iter is not a number"):
        validate(bad, "old.json")


def test_load_folder_goes_on_past_bad_files(folder):
    results, problems = load_folder([folder])
    assert sorted(r.path.name for r in results) == sorted(
        ["m3-pro.json", "h100.json", "xeon.json", "20261124T091910-speed-amd-epyc-2-cores.json"]
    )
    assert len(problems) == 3  # the auto-stop result is skipped silently
    by_file = {Path(p.split(": ", 1)[0]).name: p for p in problems}
    assert sorted(by_file) == sorted(cr.BAD_FILES)
    assert "not JSON" in by_file["broken.json"]
    assert "not a dip bench result (no 'kind')" in by_file["foreign.json"]
    assert "schema_version 7 is newer than this dip reads (1): update dip" in by_file["future.json"]


def test_load_folder_names_missing_paths_and_other_kinds_given_by_name(folder, tmp_path):
    results, problems = load_folder([folder / "autostop.json", tmp_path / "nowhere", folder / "h100.json"])
    assert [r.path.name for r in results] == ["h100.json"]
    assert len(problems) == 2 and "no such file or folder" in problems[0] and "bench.autostop" in problems[1]


def test_the_repository_results_all_load():
    results, problems = load_folder([ROOT / "bench" / "results"])
    assert problems == [] and len(results) >= 6


# --- the peak table ----------------------------------------------------------------------------------------------


def test_every_chip_asked_for_has_rows():
    chips = {chip for chip, _ in APPLE}
    for gen in ("M1", "M2", "M3", "M4"):
        for tier in ("", " Pro", " Max"):
            assert f"Apple {gen}{tier}" in chips
    assert {"Apple M1 Ultra", "Apple M2 Ultra"} <= chips
    names = {peak.name for _, peak in NVIDIA}
    for gpu in ("A100 SXM", "A100 PCIe", "H100 SXM", "H100 PCIe", "H200 SXM", "L4", "L40S", "A10", "T4", "V100 SXM2"):
        assert f"NVIDIA {gpu}" in names
    assert {"NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 4090"} <= names
    for peak in [*APPLE.values(), *(p for _, p in NVIDIA)]:
        assert peak.source.startswith("https://") and peak.gflops > 1000 and peak.how


@pytest.mark.parametrize(
    ("chip", "cores", "apple_tflops"),
    [("Apple M1", 8, 2.6), ("Apple M1 Max", 32, 10.4), ("Apple M1 Ultra", 64, 21), ("Apple M2", 10, 3.6),
     ("Apple M2 Pro", 19, 6.8), ("Apple M2 Max", 38, 13.6), ("Apple M2 Ultra", 76, 27.2)],
)  # fmt: skip
def test_apple_products_match_the_tflops_apple_published(chip, cores, apple_tflops):
    # within 3 %: for M1 Pro, Max and Ultra Apple quotes 2 % below the 1.296 GHz the GPU reaches
    assert math.isclose(APPLE[(chip, cores)].gflops / 1000, apple_tflops, rel_tol=0.03)


def test_apple_rows_depend_on_the_gpu_core_count():
    m3_pro = {"chip": "Apple M3 Pro", "gpu_cores": 18}
    assert peak_gflops(m3_pro, "mlx", "gpu", {}) == (
        pytest.approx(18 * 128 * 2 * 1.398),
        "table: Apple M3 Pro, 18-core GPU",
    )
    assert peak_gflops({**m3_pro, "gpu_cores": 14}, "torch", "gpu", {})[0] == pytest.approx(14 * 128 * 2 * 1.398)
    # without the core count, or a bin not in the table: the measured matmul
    assert peak_gflops({**m3_pro, "gpu_cores": None}, "mlx", "gpu", {"mlx/gpu": 4000.0}) == (4000.0, "measured matmul")
    assert peak_gflops({**m3_pro, "gpu_cores": 17}, "mlx", "gpu", {"mlx/gpu": 4000.0}) == (4000.0, "measured matmul")
    assert table_peak({"gpu": "Apple M3 Pro GPU", "gpu_cores": 18}).name == "Apple M3 Pro, 18-core GPU"


@pytest.mark.parametrize(
    ("name", "row"),
    [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"), ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
     ("NVIDIA H100 NVL", "NVIDIA H100 NVL"), ("NVIDIA H200", "NVIDIA H200 SXM"),
     ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM"), ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 PCIe"),
     ("NVIDIA A100 80GB PCIe", "NVIDIA A100 PCIe"), ("NVIDIA L4", "NVIDIA L4"), ("NVIDIA L40S", "NVIDIA L40S"),
     ("NVIDIA A10", "NVIDIA A10"), ("Tesla T4", "NVIDIA T4"), ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2"),
     ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe"), ("NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3090"),
     ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
     ("NVIDIA A10G", None), ("NVIDIA L40", None), ("NVIDIA GeForce RTX 3090 Ti", None), ("NVIDIA H100", None)],
)  # fmt: skip
def test_nvidia_names_as_cuda_reports_them(name, row):
    peak = table_peak({"gpu": name, "chip": name})
    assert (peak.name if peak else None) == row


def test_cpus_and_unknown_gpus_use_the_measured_matmul():
    h100 = {"gpu": "NVIDIA H100 80GB HBM3", "cpu": "Intel Xeon"}
    assert peak_gflops(h100, "torch", "cpu", {"torch/cpu": 900.0}) == (900.0, "measured matmul")
    assert peak_gflops({"gpu": "Some GPU"}, "torch", "gpu", {"torch/gpu": 5.0e3}) == (5.0e3, "measured matmul")
    value, source = peak_gflops({"cpu": "Xeon"}, "mlx", "cpu", {})
    assert value is None and "no peak" in source


# --- the table and its pages -------------------------------------------------------------------------------------


@pytest.fixture
def table(folder):
    return chip_table.build(*load_folder([folder]))


def _row(table, machine, backend, device):
    return next(r for r in table.rows if (r.machine, r.backend, r.device) == (machine, backend, device))


def test_rows_ratios_and_peaks(table):
    assert {(r.machine, r.backend, r.device) for r in table.rows} == cr.EXPECTED_ROWS
    assert len(table.rows) == len(cr.EXPECTED_ROWS) and len(table.problems) == 3
    mlx = _row(table, cr.M3_PRO, "mlx", "gpu")
    assert mlx.mlx_over_torch == pytest.approx({128: 0.8, 256: 0.75, 512: 0.8})
    assert mlx.peak_source == "table: Apple M3 Pro, 18-core GPU"
    peak = 18 * 128 * 2 * 1.398
    assert mlx.peak_percent[128] == pytest.approx(100 * cr.FLOPS_128 / 0.020 / 1e9 / peak, rel=1e-4)
    assert mlx.loop_ms[512] == pytest.approx(231.0) and mlx.peak_memory_bytes == 1600 * 2**20
    assert mlx.psnr == pytest.approx(28.3) and mlx.psnr_runs == 3 and mlx.sustained == (60.0, 66.0)
    assert mlx.findings == ("scene-denoise-s25 +0.30 dB [+0.10, +0.50]",)  # scene-sr4's interval holds zero
    h100 = _row(table, cr.H100, "torch", "gpu")
    assert h100.peak_source == "table: NVIDIA H100 SXM" and h100.mlx_over_torch == {}
    assert h100.peak_percent[512] == pytest.approx(100 * 16 * cr.FLOPS_128 / 0.030 / 1e9 / 67_000)
    xeon = _row(table, cr.XEON, "torch", "cpu")
    assert xeon.peak_source == "measured matmul" and xeon.peak_gflops == 300.0
    assert _row(table, cr.XEON, "mlx", "cpu").mlx_over_torch == pytest.approx({128: 0.93, 256: 615 / 700})
    epyc = _row(table, cr.EPYC, "mlx", "cpu")  # version 0: step only, its own run's matmul
    assert epyc.step_ms == {128: 173.2} and epyc.loop_ms == {} and epyc.peak_gflops == 204.0


def test_a_machine_measured_twice_takes_each_rows_speeds_from_one_run(folder, tmp_path):
    """The AMD row once took its 64² cell from 11-23 and its 128² from 11-24 (after the MLX speed-ups): a flat plot
    from code that was never measured together. A row's speeds come from its latest run alone, and say when."""
    later = cr.xeon()
    later["date"] = "2026-11-27T10:00:00+00:00"
    later["software"]["commit"] = "abc1234"
    later["speed"] = [cr.speed_row("mlx", "cpu", 128, "step", 150.0)]
    (folder / "xeon-again.json").write_text(json.dumps(later))
    table = chip_table.build(*load_folder([folder]))
    assert {(r.machine, r.backend, r.device) for r in table.rows} == cr.EXPECTED_ROWS
    mlx = _row(table, cr.XEON, "mlx", "cpu")
    assert mlx.step_ms == {128: 150.0}  # the older run's 256² is not mixed in
    assert mlx.mlx_over_torch == {}  # torch's time is of the older run: no ratio across runs
    assert mlx.measured.startswith("speed 2026-11-27 (abc1234)")
    torch = _row(table, cr.XEON, "torch", "cpu")
    assert not torch.measured.startswith("speed 2026-11-27")  # torch was not timed again: its own run stands


def test_markdown_page(table):
    md = chip_table.markdown(table)
    rows = markdown_rows(md)
    assert set(rows) == cr.EXPECTED_ROWS
    m3 = rows[(cr.M3_PRO, "torch", "gpu")]
    assert m3["step ms/iter 512²"] == "275.0" and m3["MLX / torch 256²"] == "0.75"
    assert m3["peak from"] == "table: Apple M3 Pro, 18-core GPU" and m3["FP32 peak GFLOP/s"] == "6,442"
    assert rows[(cr.H100, "torch", "gpu")]["peak from"] == "table: NVIDIA H100 SXM"
    assert rows[(cr.H100, "torch", "gpu")]["MLX / torch 128²"] == "-"
    xeon = rows[(cr.XEON, "mlx", "cpu")]
    assert xeon["peak from"] == "measured matmul" and xeon["MLX / torch 128²"] == "0.93"
    assert xeon["% of FP32 peak 128²"] == f"{100 * cr.FLOPS_128 / 0.186 / 1e9 / 290:.0f} %"
    assert xeon["step ms/iter 512²"] == "-"
    assert "| Apple M3 Pro (18-core GPU) | scene-denoise-s25 | +0.30 | [+0.10, +0.50] |" in md
    assert "interrupted run (what finished is shown)" in md and "skipped mlx/gpu 512²: needs 40 GiB" in md
    assert "cross-check on gpu: the backends agree" in md
    problems = md.split("## Files skipped")[1].strip().splitlines()
    assert len(problems) == 3 and all(line.startswith("- ") for line in problems)


def test_html_page_is_static_and_has_the_rows(table):
    page = chip_table.html_page(table)
    parsed = parse(page)
    assert set(parsed.rows) == cr.EXPECTED_ROWS
    assert parsed.rows[(cr.M3_PRO, "mlx", "gpu")]["ratio-512"] == "0.80"
    assert parsed.rows[(cr.H100, "torch", "gpu")]["peak-source"] == "table: NVIDIA H100 SXM"
    assert parsed.rows[(cr.XEON, "torch", "cpu")]["peak-source"] == "measured matmul"
    assert parsed.rows[(cr.M3_PRO, "mlx", "gpu")]["sustained"] == "60.0 → 66.0 (+10 %)"
    assert parsed.svgs == 3 and {"chip-table", "plot-speed", "plot-ratio", "plot-sustained"} <= set(parsed.ids)
    # nothing fetched: no scripts, no sources, and the only addresses are the SVG namespaces (names, not fetches)
    assert "<script" not in page and "src=" not in page
    assert set(re.findall(r"https?://[^\s\"<>]+", page)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    for bad in cr.BAD_FILES:
        assert f"{bad}: " in page


def test_plots_without_pairs_still_render(folder):
    results, _ = load_folder([folder / "h100.json"])
    table = chip_table.build(results)
    page = chip_table.html_page(table)
    assert parse(page).svgs == 2 and "no machine has both MLX and torch rows" in page


# --- the command -------------------------------------------------------------------------------------------------


def test_report_html_and_markdown(folder, tmp_path):
    html, md = tmp_path / "chips.html", tmp_path / "chips.md"
    result = runner.invoke(app, ["bench", "report", str(folder), "--html", str(html), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and sorted(Path(e.split(": ")[1]).name for e in errors) == sorted(cr.BAD_FILES)
    assert f"wrote {html}" in result.stdout and f"wrote {md}" in result.stdout
    assert set(parse(html.read_text()).rows) == cr.EXPECTED_ROWS
    assert set(markdown_rows(md.read_text())) == cr.EXPECTED_ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips.html", "chips.md", "results"]  # no temporary files


def test_report_markdown_alone_from_named_files(folder, tmp_path):
    md = tmp_path / "chips.md"
    args = ["bench", "report", str(folder / "h100.json"), str(folder / "future.json"), "--markdown", str(md)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("error: ") == 1 and "update dip" in result.stderr
    assert set(markdown_rows(md.read_text())) == {(cr.H100, "torch", "gpu")}


def test_report_with_no_good_file_exits_1(folder, tmp_path):
    bad = [str(folder / name) for name in cr.BAD_FILES]
    result = runner.invoke(app, ["bench", "report", *bad, "--html", str(tmp_path / "p.html")])
    assert result.exit_code == 1
    assert result.stderr.count("error: ") == 4 and "no readable dip bench results" in result.stderr
    assert not (tmp_path / "p.html").exists()


def test_report_page_in_a_missing_folder_is_a_usage_error(folder, tmp_path):
    result = runner.invoke(app, ["bench", "report", str(folder), "--html", str(tmp_path / "no" / "p.html")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_classic_report_goes_on_past_bad_files(folder, tmp_path):
    """Without --html/--markdown: the chip table (chips.html, chips.md) with report.md and charts from the speed and
    quality files beside it, one error line per bad file; a folder of only `dip bench all` files gives the chip
    table alone."""
    result = runner.invoke(app, ["bench", "report", str(folder), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("error: ") == 3
    assert "AMD EPYC" in (tmp_path / "r" / "report.md").read_text()
    assert "NVIDIA H100" in (tmp_path / "r" / "chips.md").read_text() and (tmp_path / "r" / "chips.html").exists()
    only_machines = tmp_path / "machines"
    only_machines.mkdir()
    (only_machines / "h100.json").write_text(json.dumps(cr.h100()))
    result = runner.invoke(app, ["bench", "report", str(only_machines), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 0 and (tmp_path / "r2" / "chips.html").exists()
    assert not (tmp_path / "r2" / "report.md").exists()


@pytest.mark.parametrize("verdict", ["met", "noise", "above-noise", "disagree"])
def test_the_cross_check_is_said_in_dip_crosscheck_s_own_words(verdict):
    """The machine notes once said "FAILED (max |diff| 1.2e-05, tolerance 0.0001)" of a run that `dip crosscheck`
    calls agreement (above-noise): one verdict, one wording."""
    from dip_core.run.crosscheck import agrees, verdict_text

    check = {"device": "cpu", "verdict": verdict, "passed": agrees(verdict), "excess": 2.57, "max_abs_diff": 1.2e-5,
             "tolerance": 1e-4}  # fmt: skip
    info = chip_table.MachineInfo("x", {}, {}, {}, (), (), (), check, (), None, ())
    line = next(line for line in chip_table._machine_lines(info) if "cross-check" in line)
    assert line == f"MLX/torch cross-check on cpu: {verdict_text(verdict, 2.57)}"
    assert ("disagree" in line) == (verdict == "disagree") and "FAILED" not in line


def _table_widths(page: str) -> dict[str, int]:
    """Each table of the page and the cells of its widest row."""
    widths: dict[str, int] = {}
    for name, body in re.findall(r'<table id="([^"]+)">(.*?)</table>', page, re.S):
        widths[name] = max(len(re.findall(r"<td", row)) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S))
    return widths


def test_the_page_fits_a_1280_pixel_window_in_tables_of_15_columns_at_most(table):
    """One table of every column was 25 wide on the repository's results: its last columns were off-screen at
    1280 px. The times and the rest are two tables, each row in both, every column still on the page."""
    page = chip_table.html_page(table)
    widths = _table_widths(page)
    assert {"chip-table", "chip-details"} <= set(widths)
    assert max(widths[name] for name in ("chip-table", "chip-details")) <= 15, widths
    cells = parse(page).rows[(cr.XEON, "mlx", "cpu")]
    assert {key for key, _ in chip_table._columns(table)} <= set(cells)


def test_a_table_without_apple_or_nvidia_rows_says_so_plainly(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "xeon.json").write_text(json.dumps(cr.xeon()))
    only_cpu = chip_table.build(*load_folder([folder]))
    sentence = "The table has no Apple row and no NVIDIA row yet"
    assert sentence in chip_table.html_page(only_cpu) and sentence in chip_table.markdown(only_cpu)
    (folder / "h100.json").write_text(json.dumps(cr.h100()))
    with_nvidia = chip_table.build(*load_folder([folder]))
    assert "The table has no Apple row yet" in chip_table.markdown(with_nvidia)
    (folder / "m3.json").write_text(json.dumps(cr.m3_pro()))
    assert "The table has no" not in chip_table.markdown(chip_table.build(*load_folder([folder])))


# --- DRP against DIP (bench.fast) ----------------------------------------------------------------------------------


def _fast_result(date: str, dip_seconds: float) -> dict:
    rows = [
        {"case": "scene-denoise-s25", "task": "denoise", "method": method, "backend": "mlx", "seed": seed,
         "stop": "auto", "iters": 300, "wall_seconds": seconds, "psnr_user": db, "psnr_input": 20.0}
        for seed in range(3)
        for method, seconds, db in (("dip", dip_seconds, 29.0), ("drp", 5.0, 28.8))
    ]  # fmt: skip
    return {"kind": "fast", "date": date, "fingerprint": {"cpu": "Test CPU", "cores": 4},
            "settings": {"size": 64, "seeds": 3, "max_iters": 1000, "device": "cpu"}, "finished": True,
            "rows": rows}  # fmt: skip


def test_the_quality_section_shows_each_machine_s_latest_drp_run(folder, tmp_path):
    (folder / "old-fast.json").write_text(json.dumps(_fast_result("2026-12-01T10:00:00", 10.0)))
    (folder / "new-fast.json").write_text(json.dumps(_fast_result("2026-12-04T10:00:00", 50.0)))
    html, md = tmp_path / "chips.html", tmp_path / "chips.md"
    result = runner.invoke(app, ["bench", "report", str(folder), "--html", str(html), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    section = text[text.index("## DRP against DIP") : text.index("## Machines")]
    assert "### Test CPU (4 cores)" in section and "new-fast.json" in section and "old-fast.json" not in section
    # the newer run's rows only: DRP's 5 s against DIP's 50 s, a share of 0.1 (the older run's would be 0.5)
    assert "| scene-denoise-s25 | mlx | auto | 20.00 | 300, 50.0, 29.00 | 300, 5.0, 28.80 | 0.100" in section
    page = html.read_text()
    assert 'class="fast-table" data-machine="Test CPU (4 cores)"' in page and "0.100 (0.100-0.100)" in page
    assert "0.500" not in page


def test_without_a_drp_run_the_section_says_how_to_make_one(folder, tmp_path):
    md = tmp_path / "chips.md"
    assert runner.invoke(app, ["bench", "report", str(folder), "--markdown", str(md)]).exit_code == 0
    assert chip_table.FAST_NONE in md.read_text()


def test_an_unreadable_drp_result_is_a_problem_line_and_the_rest_is_shown(folder, tmp_path):
    (folder / "bad-fast.json").write_text(json.dumps({"kind": "fast", "date": "2026-12-04", "rows": [{}]}))
    md = tmp_path / "chips.md"
    result = runner.invoke(app, ["bench", "report", str(folder), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert "bad-fast.json: not a bench.fast result this dip can read" in md.read_text()
    assert "error: " in result.stderr and "bad-fast.json" in result.stderr
    assert set(markdown_rows(md.read_text())) == cr.EXPECTED_ROWS
