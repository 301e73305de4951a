"""Paired tests of a method against a baseline: over seeds, and over users.

Both take two aligned 1-D arrays (the same seeds, or the same users, in the same order) of a
metric in [0, 1] and describe ``values - baseline``:

* ``paired_t_test``: the mean of the n per-seed differences d, its two-sided ``level`` interval
  ``mean(d) ± t_{(1+level)/2, n-1} · sd(d) / sqrt(n)`` (sd with ddof=1) and the two-sided
  p-value of Student's t statistic ``mean(d) / (sd(d) / sqrt(n))`` with n - 1 degrees of
  freedom. With n < 2, or every difference equal, there is no spread to test against: the
  interval and p-value are NaN, except that identical runs (all d = 0) give p = 1.
* ``paired_user_test``: the mean of the per-user differences, a percentile bootstrap interval
  of that mean (users resampled with replacement, ``resamples`` draws from a seeded
  generator) and the two-sided p-value of the Wilcoxon signed-rank test (zero differences
  dropped, as Wilcoxon proposed; normal approximation with tie correction for large n).

``compare_to_baseline`` applies both to a per-run results table (``fedca report``'s
results.csv): each method's group against the baseline's group of the same context.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    """n pairs; mean of ``values - baseline``; its interval [low, high]; two-sided p-value."""

    n: int
    mean_difference: float
    low: float
    high: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        """True when the p-value is below ``alpha`` (False when it is NaN)."""
        return bool(self.p_value < alpha)


def _differences(values, baseline) -> np.ndarray:
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape or values.ndim != 1:
        raise ValueError(f"paired tests need two 1-D arrays of one length, got {values.shape} and {baseline.shape}")
    return values - baseline


def paired_t_test(values, baseline, level: float = 0.95) -> PairedComparison:
    """Student's paired t-test over seeds (see the module docstring)."""
    differences = _differences(values, baseline)
    n = differences.size
    mean = float(differences.mean()) if n else float("nan")
    spread = float(differences.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or spread == 0.0:
        p_value = 1.0 if n and not differences.any() else float("nan")
        return PairedComparison(n, mean, float("nan"), float("nan"), p_value)
    error = spread / np.sqrt(n)
    half = float(stats.t.ppf((1 + level) / 2, df=n - 1)) * error
    p_value = float(2 * stats.t.sf(abs(mean) / error, df=n - 1))
    return PairedComparison(n, mean, mean - half, mean + half, p_value)


def paired_user_test(values, baseline, resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> PairedComparison:
    """Per-user bootstrap interval of the mean difference and Wilcoxon signed-rank p-value."""
    differences = _differences(values, baseline)
    n = differences.size
    if n == 0:
        return PairedComparison(0, float("nan"), float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, n, size=(resamples, n))].mean(axis=1)  # [resamples]
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    nonzero = differences[differences != 0]
    p_value = 1.0 if nonzero.size == 0 else float(stats.wilcoxon(nonzero, zero_method="wilcox").pvalue)
    return PairedComparison(n, float(differences.mean()), float(low), float(high), p_value)


def baseline_pairs(complete, key: str, baseline: str, group_cols) -> dict:
    """{group: baseline group} for every group of the per-run table ``complete`` whose ``key``
    column is not ``baseline``. Groups are tuples of ``group_cols`` values; a group's baseline is
    the group with ``key == baseline`` that agrees on every other group column except ``model``
    (a method is compared with the baseline on the same backbone when both exist, else with the
    one baseline of its context). A group without a baseline is left out; ValueError when a
    context has several baselines and none on the group's backbone."""
    position = list(group_cols).index(key)
    free = {position} | ({list(group_cols).index("model")} if "model" in group_cols else set())
    groups = [tuple(row) for row in complete[list(group_cols)].drop_duplicates().itertuples(index=False)]

    def context(group):
        return tuple(value for index, value in enumerate(group) if index not in free)

    baselines = {}
    for group in groups:
        if str(group[position]) == baseline:
            baselines.setdefault(context(group), []).append(group)
    pairs = {}
    for group in groups:
        options = baselines.get(context(group), [])
        if str(group[position]) == baseline or not options:
            continue
        same_backbone = [option for option in options if option[:position] + option[position + 1:]
                         == group[:position] + group[position + 1:]]
        if not same_backbone and len(options) > 1:
            raise ValueError(f"{len(options)} {key}={baseline} groups fit {dict(zip(group_cols, group))}; "
                             "report them separately")
        pairs[group] = (same_backbone or options)[0]
    return pairs


def compare_to_baseline(complete, key: str, baseline: str, metric: str, group_cols, per_user=None):
    """One row per paired group of ``complete`` (see ``baseline_pairs``): the group columns,
    then ``n`` (seeds both ran), ``difference``, ``low``, ``high`` and ``p_seeds`` of the paired
    t-test over seeds of ``metric``, and ``users`` and ``p_users`` of the per-user Wilcoxon test
    when ``per_user`` (a function run_dir -> per-user values as a Series indexed by user, or None
    when the run saved none) gives values for every paired run: each side's values are averaged
    over its paired seeds, then paired on the users both sides evaluated."""
    rows = []
    for group, base in baseline_pairs(complete, key, baseline, group_cols).items():
        mine, theirs = (complete[(complete[list(group_cols)] == pd.Series(g, index=list(group_cols))).all(axis=1)]
                        .set_index("seed") for g in (group, base))
        seeds = sorted(set(mine.index) & set(theirs.index))
        test = paired_t_test(mine.loc[seeds, metric].astype(float), theirs.loc[seeds, metric].astype(float))
        row = {**dict(zip(group_cols, group)), "n": test.n, "difference": test.mean_difference,
               "low": test.low, "high": test.high, "p_seeds": test.p_value, "users": 0, "p_users": float("nan")}
        if per_user is not None and seeds:
            sides = [[per_user(side.loc[seed, "run_dir"]) for seed in seeds] for side in (mine, theirs)]
            if all(values is not None for side in sides for values in side):
                means = [pd.concat(side, axis=1, join="inner").mean(axis=1) for side in sides]  # [users] per side
                mine_users, their_users = means[0].align(means[1], join="inner")
                users = paired_user_test(mine_users.to_numpy(), their_users.to_numpy())
                row.update(users=users.n, p_users=users.p_value)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*group_cols, "n", "difference", "low", "high", "p_seeds", "users", "p_users"])
