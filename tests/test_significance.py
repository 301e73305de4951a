"""Paired tests against a baseline, on cases worked by hand."""

import math

import numpy as np
import pytest

from fedca.results.significance import compare_to_baseline, paired_t_test, paired_user_test


def test_paired_t_test_matches_the_closed_form_for_two_degrees_of_freedom():
    # d = [1, 2, 3]: mean 2, sd 1, standard error 1/sqrt(3), t = 2*sqrt(3), df = 2.
    # Student's t with 2 df has CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p-value
    # is 1 - t / sqrt(2 + t^2) and the 97.5% quantile solves q / sqrt(2 + q^2) = 0.95,
    # i.e. q^2 = 2 * 0.95^2 / (1 - 0.95^2).
    result = paired_t_test([3.0, 4.0, 5.0], [2.0, 2.0, 2.0])
    t = 2 * math.sqrt(3)
    q = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
    assert result.n == 3
    assert result.mean_difference == pytest.approx(2.0, abs=1e-15)
    assert result.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert result.low == pytest.approx(2 - q / math.sqrt(3), rel=1e-9)
    assert result.high == pytest.approx(2 + q / math.sqrt(3), rel=1e-9)
    assert not result.significant()  # p = 0.074


def test_swapping_method_and_baseline_negates_the_difference_and_keeps_the_p_value():
    forward = paired_t_test([0.5, 0.7, 0.4, 0.9], [0.2, 0.3, 0.3, 0.1])
    backward = paired_t_test([0.2, 0.3, 0.3, 0.1], [0.5, 0.7, 0.4, 0.9])
    assert backward.mean_difference == pytest.approx(-forward.mean_difference, abs=1e-15)
    assert (backward.low, backward.high) == pytest.approx((-forward.high, -forward.low), abs=1e-12)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-12)


def test_a_large_consistent_gain_is_significant():
    result = paired_t_test([0.90, 0.91, 0.89, 0.90, 0.92], [0.50, 0.49, 0.51, 0.50, 0.48])
    assert result.significant() and result.low > 0.35


def test_identical_runs_have_p_one_and_one_seed_has_no_test():
    same = paired_t_test([0.4, 0.5], [0.4, 0.5])
    assert same.mean_difference == 0 and same.p_value == 1.0
    single = paired_t_test([0.4], [0.3])
    assert single.mean_difference == pytest.approx(0.1) and math.isnan(single.p_value)
    assert not single.significant()


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_t_test([0.1, 0.2], [0.1])


def test_wilcoxon_p_value_is_the_exact_one_and_zero_differences_are_dropped():
    # Five positive differences without ties: the signed-rank statistic takes its most extreme
    # value, which 1 of the 2^5 sign patterns reaches on each side, so p = 2 / 32.
    result = paired_user_test([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.0])
    assert result.p_value == pytest.approx(2 / 32, rel=1e-12)
    assert result.n == 6 and result.mean_difference == pytest.approx(1.5 / 6)


def test_bootstrap_interval_has_the_width_of_the_normal_interval_on_many_users():
    # d = +/-1 around 0.2 over 1,000 users: population sd 1, so a 95% interval of the mean has
    # half-width about 1.96 / sqrt(1000) = 0.062; 10,000 resamples estimate the quantiles to a few %.
    differences = np.tile([-1.0, 1.0], 500) + 0.2
    result = paired_user_test(differences, np.zeros(1000), seed=3)
    assert result.mean_difference == pytest.approx(0.2, abs=1e-12)
    assert result.low < 0.2 < result.high
    assert (result.high - result.low) / 2 == pytest.approx(1.96 / math.sqrt(1000), rel=0.1)
    assert result.significant()


def test_a_constant_difference_has_a_point_interval_and_all_ties_p_one():
    shifted = paired_user_test([0.3] * 8, [0.2] * 8)
    assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1)
    same = paired_user_test([0.5, 0.0, 1.0], [0.5, 0.0, 1.0])
    assert same.p_value == 1.0 and same.mean_difference == 0.0


def _runs(rows):
    import pandas as pd
    return pd.DataFrame(rows, columns=["run_dir", "dataset", "model", "agg", "seed", "test_hr@10"])


def test_each_method_is_paired_with_the_baseline_of_its_dataset_and_backbone():
    complete = _runs([
        ("a0", "ml", "fcf", "fedavg", 0, 0.50), ("a1", "ml", "fcf", "fedavg", 1, 0.52),
        ("b0", "ml", "ncf", "fedavg", 0, 0.30), ("b1", "ml", "ncf", "fedavg", 1, 0.34),
        ("c0", "ml", "fcf", "composite", 0, 0.90), ("c1", "ml", "fcf", "composite", 1, 0.93),
        ("d0", "ml", "ncf", "fedper", 0, 0.40), ("d1", "ml", "ncf", "fedper", 1, 0.43),
        ("e0", "ft", "fcf", "composite", 0, 0.70),  # no FedAvg on this dataset: left out
    ])
    table = compare_to_baseline(complete, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"])
    by_agg = table.set_index("agg")
    assert sorted(by_agg.index) == ["composite", "fedper"]
    assert by_agg.loc["composite", "difference"] == pytest.approx(((0.90 - 0.50) + (0.93 - 0.52)) / 2)
    assert by_agg.loc["fedper", "difference"] == pytest.approx(((0.40 - 0.30) + (0.43 - 0.34)) / 2)
    assert (by_agg["n"] == 2).all()


def test_a_method_on_another_backbone_uses_the_only_baseline_and_several_are_refused():
    only = _runs([("a0", "ml", "fcf", "fedavg", 0, 0.5), ("p0", "ml", "pfedrec", "pfedrec", 0, 0.7)])
    table = compare_to_baseline(only, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"])
    assert table["difference"].tolist() == pytest.approx([0.2])
    several = _runs([("a0", "ml", "fcf", "fedavg", 0, 0.5), ("b0", "ml", "ncf", "fedavg", 0, 0.3),
                     ("p0", "ml", "pfedrec", "pfedrec", 0, 0.7)])
    with pytest.raises(ValueError, match="2 agg=fedavg groups"):
        compare_to_baseline(several, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"])


def test_per_user_values_are_averaged_over_seeds_then_paired_by_user():
    complete = _runs([("a0", "ml", "fcf", "fedavg", 0, 0.0), ("a1", "ml", "fcf", "fedavg", 1, 0.0),
                      ("c0", "ml", "fcf", "composite", 0, 0.0), ("c1", "ml", "fcf", "composite", 1, 0.0)])
    # composite beats FedAvg for every one of 6 users after averaging seeds (differences 1..6 / 2):
    # the exact Wilcoxon p-value of 6 positive untied differences is 2 / 2^6.
    import pandas as pd

    per_user = {name: pd.Series(values) for name, values in
                {"a0": np.zeros(6), "a1": np.zeros(6), "c0": np.arange(1, 7.0), "c1": np.zeros(6)}.items()}
    table = compare_to_baseline(complete, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"],
                                per_user=per_user.get)
    assert table["p_users"].tolist() == pytest.approx([2 / 64]) and table["users"].tolist() == [6]
    # users only one side evaluated are left out: FedAvg's runs lack user 5, so 5 pairs remain
    fewer = dict(per_user, a0=per_user["a0"].iloc[:5], a1=per_user["a1"].iloc[:5])
    table = compare_to_baseline(complete, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"],
                                per_user=fewer.get)
    assert table["p_users"].tolist() == pytest.approx([2 / 32]) and table["users"].tolist() == [5]
    missing = compare_to_baseline(complete, "agg", "fedavg", "test_hr@10", ["dataset", "model", "agg"],
                                  per_user={"a0": per_user["a0"]}.get)
    assert math.isnan(missing["p_users"].iloc[0])
