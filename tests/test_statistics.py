"""Intervals and paired tests against a published worked example and hand arithmetic."""

from __future__ import annotations

import math

import pytest

from cl_fir.report.statistics import mean_ci, paired_t_test

# Student's sleep data (Cushny and Peebles 1905): extra hours of sleep of 10 patients under two
# drugs. The paired t-test of drug 1 - drug 2 is the textbook example: t = -4.0621, df = 9,
# p = 0.002833, 95% CI of the mean difference (-2.4599, -0.7001), mean -1.58.
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_t_test_reproduces_the_sleep_example():
    test = paired_t_test(dict(enumerate(DRUG1)), dict(enumerate(DRUG2)))
    assert test.pairs == 10
    assert test.difference == pytest.approx(-1.58)
    assert test.p_value == pytest.approx(0.002833, abs=2e-6)
    assert (test.difference - test.half_width, test.difference + test.half_width) == pytest.approx(
        (-2.4598858, -0.7001142), abs=1e-6)
    assert test.significant


def test_pairs_only_common_seeds_and_refuses_too_few():
    test = paired_t_test({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.5, 1: 1.0, 7: 3.0})
    assert test.pairs == 2 and test.difference == pytest.approx(0.75)
    assert math.isnan(paired_t_test({0: 1.0}, {0: 2.0}).p_value)
    assert paired_t_test({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}).p_value == 1.0


def test_mean_ci_is_the_student_interval():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, half = mean_ci(values)
    # sd = sqrt(2.5), t(0.975, 4) = 2.776445
    assert mean == 3.0 and half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(mean_ci([2.0])[1]) and mean_ci([2.0])[0] == 2.0
    assert math.isnan(mean_ci([])[0])
