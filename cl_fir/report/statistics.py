"""Uncertainty of results over seeds: confidence intervals and paired tests.

A run's seed fixes its data order, augmentations and initial weights (the dataset and the
pretrained start are the same for every seed), so two strategies run with the same seed
face the same draws: their results are paired. Differences between strategies are
therefore tested with the **paired two-sided Student t-test** over the seeds both have
(the mean of the per-seed differences against its standard error, n - 1 degrees of
freedom). Intervals are Student-t intervals of the mean at 95%.

With few seeds these tests have little power: a difference that is not significant is
reported as no difference, not as a small one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Confidence level of every interval, and the significance level of every test (1 - level).
LEVEL = 0.95


def _t_quantile(df: int, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Mean and half-width of its Student-t confidence interval (NaN half-width below 2 values);
    NaN values are left out."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    if arr.size == 1:
        return float(arr[0]), math.nan
    return float(arr.mean()), _t_quantile(arr.size - 1, level) * float(arr.std(ddof=1)) / math.sqrt(arr.size)


@dataclass(frozen=True)
class PairedTest:
    """``a - b`` over paired seeds: mean difference, its interval half-width, p-value, pairs."""

    difference: float
    half_width: float
    p_value: float
    pairs: int

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < 1 - LEVEL


def paired_t_test(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> PairedTest:
    """Paired two-sided t-test of ``a - b`` over the seeds (keys) both have. Fewer than 2 pairs,
    or pairs that are all equal, give no test (p = NaN; identical results: p = 1)."""
    seeds = sorted(set(a) & set(b))
    d = np.asarray([a[s] - b[s] for s in seeds if not (math.isnan(a[s]) or math.isnan(b[s]))], dtype=np.float64)
    if d.size < 2:
        return PairedTest(float(d.mean()) if d.size else math.nan, math.nan, math.nan, int(d.size))
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return PairedTest(mean, 0.0, 1.0 if mean == 0 else 0.0, int(d.size))
    from scipy.stats import t

    se = sd / math.sqrt(d.size)
    p = 2 * float(t.sf(abs(mean / se), d.size - 1))
    return PairedTest(mean, _t_quantile(d.size - 1, level) * se, p, int(d.size))
