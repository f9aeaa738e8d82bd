"""Continual-learning metrics on hand-computed examples, their errors and their JSON forms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from evaluator.metrics import (
    AccuracyMatrix,
    RunMetrics,
    acc,
    bwt,
    computational_efficiency,
    forgetting,
    fwt,
    model_bytes,
    model_size_efficiency,
    peak_rss_bytes,
    samples_storage_efficiency,
)

NAN = math.nan
# R[i][j]: accuracy on experience j after training on experience i.
R = [[0.90, 0.10, 0.20],
     [0.70, 0.80, 0.30],
     [0.60, 0.70, 0.85]]
B = [0.05, 0.10, 0.15]


def test_gem_metrics_by_hand() -> None:
    assert acc(R) == pytest.approx((0.60 + 0.70 + 0.85) / 3)
    assert bwt(R) == pytest.approx(((0.60 - 0.90) + (0.70 - 0.80)) / 2)
    assert fwt(R, B) == pytest.approx(((0.10 - 0.10) + (0.30 - 0.15)) / 2)
    assert forgetting(R) == pytest.approx(((0.90 - 0.60) + (0.80 - 0.70)) / 2)


def test_forgetting_takes_the_best_earlier_accuracy() -> None:
    better_before_learning = [row[:] for row in R]
    better_before_learning[0][1] = 0.95  # measured before experience 1 was learned
    assert forgetting(better_before_learning) == pytest.approx(((0.90 - 0.60) + (0.95 - 0.70)) / 2)
    lower_triangle = [[0.90, NAN, NAN], [0.70, 0.80, NAN], [0.60, 0.70, 0.85]]
    assert forgetting(lower_triangle) == pytest.approx(forgetting(R))
    assert forgetting([[0.5, NAN], [0.8, 0.9]]) == pytest.approx(-0.3)  # remembered better


def test_metrics_accept_an_accuracy_matrix() -> None:
    matrix = AccuracyMatrix(3)
    for i, row in enumerate(R):
        for j, a in enumerate(row):
            matrix.record(i, j, a)
    assert (acc(matrix), bwt(matrix), fwt(matrix, B), forgetting(matrix)) == (
        acc(R), bwt(R), fwt(R, B), forgetting(R))
    assert np.array_equal(np.asarray(matrix), np.array(R))


@pytest.mark.parametrize("bad", [[[0.5, 0.5]], [0.5, 0.5], [], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
def test_non_square_matrices_are_rejected(bad: list) -> None:
    for metric in (acc, bwt, forgetting, lambda r: fwt(r, [0, 0])):
        with pytest.raises(ValueError, match="must be square"):
            metric(bad)


def test_missing_entries_are_named() -> None:
    def without(i: int, j: int) -> list[list[float]]:
        holed = [row[:] for row in R]
        holed[i][j] = NAN
        return holed

    with pytest.raises(ValueError, match=r"R\[2\]\[1\] \(accuracy on experience 1 after "
                                         r"training on experience 2\) is not measured"):
        acc(without(2, 1))
    with pytest.raises(ValueError, match=r"R\[1\]\[1\]"):
        bwt(without(1, 1))
    with pytest.raises(ValueError, match=r"R\[0\]\[1\]"):
        fwt(without(0, 1), B)
    with pytest.raises(ValueError, match=r"R\[1\]\[0\]"):
        forgetting(without(1, 0))
    with pytest.raises(ValueError, match=r"b\[2\]"):
        fwt(R, [0.1, 0.1, NAN])
    assert bwt(without(0, 2)) == bwt(R)  # above the diagonal: not needed


def test_metrics_needing_two_experiences_say_so() -> None:
    assert acc([[0.7]]) == pytest.approx(0.7)
    for metric in (bwt, forgetting, lambda r: fwt(r, [0.1])):
        with pytest.raises(ValueError, match="at least 2 experiences"):
            metric([[0.7]])
    with pytest.raises(ValueError, match="one accuracy per experience"):
        fwt(R, [0.1, 0.1])


def test_accuracy_matrix_json_round_trip_keeps_nan() -> None:
    matrix = AccuracyMatrix(3)
    matrix.record(0, 0, 0.9)
    matrix.record(1, 0, 0.75)
    matrix.record(1, 1, 0.8)
    matrix.record(2, 2, 1.0)
    text = json.dumps(matrix.to_dict(), allow_nan=False)
    assert "null" in text
    back = AccuracyMatrix.from_dict(json.loads(text))
    assert np.array_equal(back.values, matrix.values, equal_nan=True)
    assert back.n_experiences == 3


def test_accuracy_matrix_rejects_bad_records() -> None:
    matrix = AccuracyMatrix(2)
    with pytest.raises(ValueError, match=r"R\[2\]\[0\] is outside a 2 x 2"):
        matrix.record(2, 0, 0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        matrix.record(0, 0, 1.5)
    with pytest.raises(ValueError, match="must be square"):
        AccuracyMatrix.from_dict({"accuracy": [[0.5, None], [0.5]]})
    with pytest.raises(ValueError, match="at least 1 experience"):
        AccuracyMatrix(0)


def test_efficiency_metrics_by_hand() -> None:
    assert model_size_efficiency([1000, 1000, 1000, 1000]) == 1.0
    assert model_size_efficiency([1000, 2000, 4000]) == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert model_size_efficiency([1000, 500]) == 1.0  # a shrinking model is capped at 1
    assert samples_storage_efficiency([0, 0, 0], 6000) == 1.0
    assert samples_storage_efficiency([500, 1000, 1500], 6000) == pytest.approx(1 - 1 / 6)
    assert samples_storage_efficiency([9000, 9000], 6000) == 0.0  # capped at 0
    assert computational_efficiency([100, 100], [999, 1999]) == pytest.approx((0.1 + 0.05) / 2)
    assert computational_efficiency([100, 100], [999, 1999], epsilon=10) == pytest.approx(0.75)
    assert computational_efficiency([100], [0]) == 1.0  # capped at 1


def test_efficiency_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one experience"):
        model_size_efficiency([])
    with pytest.raises(ValueError, match="> 0"):
        model_size_efficiency([100, 0])
    with pytest.raises(ValueError, match="> 0"):
        samples_storage_efficiency([10], 0)
    with pytest.raises(ValueError, match=">= 0"):
        samples_storage_efficiency([-1], 10)
    with pytest.raises(ValueError, match="2 pass counts but 1 training counts"):
        computational_efficiency([1, 1], [5])


def test_run_metrics_to_dict_is_json_safe() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    # Linear: 4*3 + 3 floats; BatchNorm: weight, bias, running mean/var (floats) + one int64.
    assert model_bytes(model) == (15 + 12) * 4 + 8
    metrics = RunMetrics(wall_time_s=2.5, peak_rss_bytes=peak_rss_bytes(),
                         model_bytes=model_bytes(model), acc=np.float64(0.7), bwt=NAN,
                         fwt=math.inf)
    data = json.loads(json.dumps(metrics.to_dict(), allow_nan=False))
    assert data["peak_rss_bytes"] > 10 * 2**20  # a Python process with torch loaded
    assert (data["acc"], data["bwt"], data["fwt"], data["forgetting"]) == (0.7, None, None, None)
    assert set(data) >= {"wall_time_s", "model_size_efficiency", "samples_storage_efficiency",
                         "computational_efficiency"}
