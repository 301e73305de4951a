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
"""

from dataclasses import dataclass

import numpy as np
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
