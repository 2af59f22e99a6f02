"""The stopping study's test set, replayed: a change to the default rule (or to the noise estimate it uses) that
worsens its mean gap on the committed curves of photos it was never tuned on fails here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.autostop import load_rows, noise_levels, replay_rule, summarise
from bench.photos import PHOTOS, case_by_name
from tests.common import ROOT

SUMMARY = ROOT / "bench" / "report" / "stopping-test-set.json"


@pytest.fixture(scope="module")
def study() -> dict:
    return json.loads(SUMMARY.read_text())


@pytest.fixture(scope="module")
def test_rows(study) -> list[dict]:
    return load_rows([ROOT / f for f in study["files"]], "test")


def test_the_test_set_is_twenty_photos_on_both_backends_and_two_seeds(test_rows):
    photos = {case_by_name(row["case"]).photo for row in test_rows}
    assert photos == set(PHOTOS) and len(photos) >= 20
    assert {row["backend"] for row in test_rows} == {"mlx", "torch"}
    assert all(row["backend"] == case_by_name(row["case"]).backend for row in test_rows)
    at_96 = [case_by_name(row["case"]) for row in test_rows if case_by_name(row["case"]).size == 96]
    assert all(len({c.seed for c in at_96 if c.photo == photo}) >= 2 for photo in PHOTOS)
    # Seed 1 at 96 px ran 3000 iterations (1500 above sigma 20); the later recordings 2000 (800 above sigma 30).
    # Above sigma 20 the best output came at least 100 iterations before the end of every recording but one:
    # coffee at 128 px, sigma 35, whose 800 were too few (still rising at the end, the loss not yet at the level).
    # Below sigma 20 a recording of 2000 may end before the best. Such a gap is measured against the best the
    # recording holds: the docs say so.
    for row in test_rows:
        n = len(row["loss_curve"])
        assert n in (3000, 2000) or (row["sigma"] > 20 and n in (1500, 800))
        short = row["case"] == "photo-coffee-s35-128@1"
        assert row["sigma"] <= 20 or short or int(np.argmax(row["candidate_psnr"])) < n - 100


def test_the_default_rule_is_no_worse_on_the_test_set_than_recorded(study, test_rows):
    levels = noise_levels(test_rows, None)
    figures = summarise([replay_rule(row, "default", levels[row["case"]]) for row in test_rows])
    recorded = study["rules"]["default"]
    assert figures["cases"] == recorded["cases"]
    assert figures["mean_gap"] <= recorded["mean_gap"] + 1e-6
    assert figures["max_gap"] <= recorded["max_gap"] + 1e-6
    assert figures["mean_after"] <= recorded["mean_after"] + 1e-6


def test_the_noise_estimate_of_dip_0_3_is_worse_on_the_test_set(study, test_rows):
    """The refined noise estimate is what the default rule's gain on the test set comes from."""
    levels, whole = noise_levels(test_rows, None), noise_levels(test_rows, None, "global")
    now = summarise([replay_rule(row, "default", levels[row["case"]]) for row in test_rows])
    before = summarise([replay_rule(row, "default", whole[row["case"]]) for row in test_rows])
    assert now["mean_gap"] < before["mean_gap"] - 0.1


PAIR = ROOT / "bench" / "report" / "ema-warmup-pair.json"


def test_the_average_that_forgets_its_start_keeps_its_gain_on_the_re_recorded_cases():
    """The same cases recorded with dip 0.4's average and with --ema-warmup 9 (dip 0.5's default): the default
    rule's choice, replayed on both, keeps the figures committed, and the newer average is the better one."""
    pair = json.loads(PAIR.read_text())
    before = {(r["case"], r.get("backend")): r for r in load_rows([ROOT / f for f in pair["before"]], "test")}
    after = [r for r in load_rows([ROOT / f for f in pair["after"]], "test") if (r["case"], r.get("backend")) in before]
    assert len(after) == len(pair["cases"]) >= 21 and all(r["ema_warmup"] == 9 for r in after)
    assert all("ema_warmup" not in before[(r["case"], r.get("backend"))] for r in after)  # the paper's average
    levels = noise_levels(after, None)
    gains = []
    for row in after:
        old, new = before[(row["case"], row.get("backend"))], row
        a = replay_rule(old, "default", levels[row["case"]])["auto"]
        b = replay_rule(new, "default", levels[row["case"]])["auto"]
        recorded = pair["cases"][f"{row['case']}/{row.get('backend', 'torch')}"]
        assert (a, b) == (pytest.approx(recorded["before"], abs=1e-9), pytest.approx(recorded["after"], abs=1e-9))
        gains.append(b - a)
    assert np.mean(gains) == pytest.approx(pair["figures"]["change"], abs=1e-9) and np.mean(gains) > 0.2
    assert pair["figures"]["gap_after"] < pair["figures"]["gap_before"] - 0.2
