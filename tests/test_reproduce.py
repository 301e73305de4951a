"""The reproduction check fails on a value outside its band or a broken ordering."""

import pandas as pd

from fedca.reproduce import check

EXPECTED = {"values": {"ml100k/fedavg": {"mean": 0.40, "tolerance": 0.03},
                       "ml100k/composite": {"mean": 0.73, "tolerance": 0.04}},
            "orderings": [["ml100k/composite", "ml100k/fedavg"]]}


def _grouped(fedavg: float, composite: float) -> pd.DataFrame:
    return pd.DataFrame({"dataset": ["ml100k", "ml100k"], "agg": ["fedavg", "composite"],
                         "test_hr@10_mean": [fedavg, composite]})


def test_values_inside_their_bands_pass():
    assert check(_grouped(0.41, 0.72), EXPECTED) == []


def test_a_value_outside_its_band_is_reported():
    problems = check(_grouped(0.45, 0.72), EXPECTED)
    assert len(problems) == 1 and "ml100k/fedavg" in problems[0]


def test_a_broken_ordering_is_reported():
    loose = {"values": {}, "orderings": EXPECTED["orderings"]}
    assert check(_grouped(0.75, 0.72), loose) == ["ordering ml100k/composite > ml100k/fedavg does not hold (0.72 vs 0.75)"]
