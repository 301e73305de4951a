"""The reproduction check: bands and paired gaps recorded from per-seed results, and the proof
that it fails when composite is silently replaced by no aggregation, by FedAvg, or has the sign
of its similarity term flipped (recorded per-seed results of each variant, made as
``scripts/reproduce_variants.py`` describes)."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from fedca.errors import FedcaError
from fedca.reproduce import METRICS, STATS, Z, check, read_table, record

REPO = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((REPO / "scripts" / "expected" / "ci_reproduce.json").read_text())
REAL = REPO / "scripts" / "expected" / "ci_reproduce_runs.csv"
VARIANTS = REPO / "tests" / "data" / "reproduce_variants"


def _table(**by_agg) -> pd.DataFrame:
    """Per-seed rows of ml100k/fedca: by_agg[agg] = (three HR values, stat value or None); NDCG
    is HR / 2, the final round equals the selected one."""
    rows = []
    for agg, (hrs, stat) in by_agg.items():
        for seed, hr in enumerate(hrs):
            row = {"dataset": "ml100k", "protocol": "fedca", "agg": agg, "seed": seed, "num_users": 943}
            row.update({metric: hr / 2 if "ndcg" in metric else hr for metric in METRICS})
            row.update({name: math.nan if stat is None else stat + 0.001 * seed for name in STATS})
            rows.append(row)
    return pd.DataFrame(rows)


def _synthetic() -> pd.DataFrame:
    return _table(local=([0.70, 0.71, 0.72], None), fedavg=([0.40, 0.41, 0.39], None),
                  composite=([0.74, 0.76, 0.75], 0.5))


def test_a_table_passes_its_own_record_and_the_bands_follow_the_rule():
    expected = record(_synthetic())
    assert check(_synthetic(), expected) == []
    band = expected["bands"]["ml100k/fedca/composite"]["test_hr@10"]
    # std of (0.74, 0.76, 0.75) is 0.01, so Z * 0.01 * sqrt(2/3) = 0.0245; the floor for a mean of
    # 0.75 over 943 users, Z * sqrt(2/3) * sqrt(0.75 * 0.25 / 943) = 0.0345, is the larger.
    floor = Z * math.sqrt(2 / 3) * math.sqrt(0.75 * 0.25 / 943)
    assert band["mean"] == pytest.approx(0.75) and band["tolerance"] == pytest.approx(floor)
    gap = expected["gaps"]["ml100k/fedca/composite-local"]["test_hr@10"]
    assert gap["mean"] == pytest.approx(0.04)
    assert set(expected["bands"]["ml100k/fedca/composite"]) == {*METRICS, *STATS}
    assert set(expected["bands"]["ml100k/fedca/local"]) == set(METRICS)  # local records no statistics


def test_a_metric_outside_its_band_a_gap_of_the_wrong_size_and_a_missing_statistic_are_reported():
    expected = record(_synthetic())
    shifted = _table(local=([0.70, 0.71, 0.72], None), fedavg=([0.40, 0.41, 0.39], None),
                     composite=([0.70, 0.71, 0.72], None))
    problems = check(shifted, expected)
    assert any(p.startswith("band ml100k/fedca/composite test_hr@10: 0.7100 outside") for p in problems)
    assert any(p.startswith("gap ml100k/fedca/composite-local test_hr@10: +0.0000 outside") for p in problems)
    assert any(p.startswith("band ml100k/fedca/composite w_self: nan outside") for p in problems)


def test_a_missing_seed_is_reported():
    table = _synthetic()
    problems = check(table[table["seed"] != 2], record(table))
    assert "band ml100k/fedca/composite: 2 runs, expected 3" in problems


def test_a_file_that_is_not_a_per_seed_table_is_an_input_error(tmp_path):
    (tmp_path / "other.csv").write_text("dataset,agg\nml100k,composite\n")
    with pytest.raises(FedcaError, match="not a per-seed table of fedca reproduce .no column protocol, seed"):
        read_table(tmp_path / "other.csv")


def test_the_recorded_results_of_the_current_code_pass():
    assert check(read_table(REAL), EXPECTED) == []


# What catches each variant: relabelled local or FedAvg runs miss composite's HR/NDCG bands and
# gaps; the flipped similarity sign drives the self-weight to 0 and spreads the weights
# (w_self, w_entropy, w_nonzero far outside their bands everywhere) and widens the gap over
# local on FilmTrust and under protocol strict, while on ML-100K under protocol fedca its HR/NDCG
# stay inside their bands.
CAUGHT_BY = {"local_as_composite": METRICS, "fedavg_as_composite": METRICS,
             "similarity_sign_flipped": (*METRICS, "w_self", "w_entropy", "w_nonzero")}


@pytest.mark.parametrize("variant", sorted(CAUGHT_BY))
def test_each_wrong_variant_of_composite_fails(variant):
    problems = check(read_table(VARIANTS / f"{variant}.csv"), EXPECTED)
    assert problems, f"{variant} passes the reproduction"
    composite = [p for p in problems if "/composite " in p or "/composite-" in p]
    assert composite == problems  # only composite changed, and only composite's signatures fail
    for quantity in CAUGHT_BY[variant]:
        assert any(f" {quantity}:" in p for p in problems), f"{variant}: no {quantity} signature fails"
