"""Continual-learning metrics derived from hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cl_fir.evaluation import matrix_metrics as mm

nan = float("nan")

# One task per increment. Rows: after increment 0, 1, 2.
A1 = np.array([
    [80.0, nan, nan],
    [60.0, 70.0, nan],
    [70.0, 40.0, 90.0],
])
T1 = [0, 1, 2]


def test_seen_mean_curve_and_average_incremental():
    np.testing.assert_allclose(mm.seen_mean_curve(A1, T1), [80.0, 65.0, 200.0 / 3])
    assert mm.average_incremental(A1, T1) == pytest.approx((80 + 65 + 200 / 3) / 3)


def test_forgetting_uses_the_max_over_earlier_rows_only():
    # task 0: max(80, 60) - 70 = 10; task 1: max(70) - 40 = 30; task 2 is not old.
    np.testing.assert_allclose(mm.forgetting_per_task(A1, T1)[:2], [10.0, 30.0])
    assert math.isnan(mm.forgetting_per_task(A1, T1)[2])
    assert mm.forgetting(A1, T1) == pytest.approx(20.0)
    # after increment 1: task 0: 80 - 60 = 20
    assert mm.forgetting(A1, T1, k=1) == pytest.approx(20.0)


def test_forgetting_is_negative_when_a_task_improved():
    A = np.array([[50.0, nan], [60.0, 70.0]])
    assert mm.forgetting(A, [0, 1]) == pytest.approx(-10.0)


def test_backward_transfer():
    # task 0: 70 - 80 = -10; task 1: 40 - 70 = -30
    assert mm.backward_transfer(A1, T1) == pytest.approx(-20.0)
    assert mm.backward_transfer(A1, T1, k=1) == pytest.approx(-20.0)


def test_final_mean_unweighted_and_query_weighted():
    assert mm.final_mean(A1, T1) == pytest.approx(200.0 / 3)
    # weights 1, 1, 2 -> (70 + 40 + 180) / 4
    assert mm.final_mean(A1, T1, weights=[1, 1, 2]) == pytest.approx(72.5)


def test_two_tasks_per_increment():
    A = np.array([
        [60.0, 40.0, nan, nan],
        [50.0, 42.0, 80.0, 20.0],
    ])
    T = [0, 0, 1, 1]
    np.testing.assert_allclose(mm.seen_mean_curve(A, T), [50.0, 48.0])
    # old tasks: 0 and 1: forgetting 10 and -2; BWT -10 and +2
    assert mm.forgetting(A, T) == pytest.approx(4.0)
    assert mm.backward_transfer(A, T) == pytest.approx(-4.0)


def test_single_increment_has_no_forgetting_or_bwt():
    A = np.array([[30.0, 50.0]])
    assert math.isnan(mm.forgetting(A, [0, 0]))
    assert math.isnan(mm.backward_transfer(A, [0, 0]))
    s = mm.summarise(A, [0, 0], weights=[3, 1])
    assert s["avg_incremental"] == pytest.approx(40.0) and s["final_weighted"] == pytest.approx(35.0)


def test_rejects_missing_seen_cells_and_bad_shapes():
    with pytest.raises(ValueError, match="finite"):
        mm.forgetting(np.array([[nan, nan], [1.0, 2.0]]), [0, 1])
    with pytest.raises(ValueError):
        mm.forgetting(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError):
        mm.forgetting(np.zeros((2, 2)), [0, 2])
