"""mpnn.metrics: hand-checkable numbers for the whole-set and the within-group metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpnn.metrics import group_metrics, regression_metrics, spearman, tail_errors


def test_regression_metrics_of_a_constant_offset():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(truth, truth + 0.5)
    assert (m["count"], m["mae"], m["rmse"], m["pearson_r"]) == (4, 0.5, 0.5, pytest.approx(1.0))
    # SS_res = 4 * 0.25 = 1, SS_tot = 5
    assert m["r2"] == pytest.approx(0.8)


def test_perfect_ranking_has_spearman_one_whatever_the_scale():
    truth = np.arange(20.0)
    assert spearman(truth, truth**3 - 7) == pytest.approx(1.0)
    assert spearman(truth, -truth) == pytest.approx(-1.0)


def test_spearman_is_none_for_small_or_constant_groups():
    assert spearman(np.arange(9.0), np.arange(9.0)) is None  # below MIN_GROUP_RECORDS = 10
    assert spearman(np.arange(3.0), np.arange(3.0), min_records=3) == pytest.approx(1.0)
    assert spearman(np.arange(12.0), np.full(12, 2.0)) is None


def test_tails_of_a_constant_offset_have_bias_equal_to_the_offset():
    truth = np.arange(40.0)
    tails = tail_errors(truth, truth - 0.25)
    # ceil(0.05 * 40) = 2 records in each tail
    assert tails["low_tail"] == {"count": 2, "mae": 0.25, "bias": -0.25}
    assert tails["high_tail"] == {"count": 2, "mae": 0.25, "bias": -0.25}


def test_prediction_pulled_to_the_mean_overestimates_the_low_tail():
    truth = np.arange(20.0)  # mean 9.5
    pulled = 0.5 * truth + 0.5 * 9.5
    tails = tail_errors(truth, pulled)
    # one record per tail: the lowest, 0 -> 4.75; the highest, 19 -> 14.25
    assert tails["low_tail"] == {"count": 1, "mae": 4.75, "bias": 4.75}
    assert tails["high_tail"] == {"count": 1, "mae": 4.75, "bias": -4.75}


def test_tail_picks_records_by_true_value_not_by_position():
    truth = np.array([5.0, -3.0, 9.0, 0.0])
    pred = np.array([5.0, -1.0, 9.0, 0.0])  # only the lowest (-3) is wrong, by +2
    tails = tail_errors(truth, pred, fraction=0.25)
    assert tails["low_tail"]["bias"] == 2.0 and tails["high_tail"]["bias"] == 0.0


def test_group_metrics_per_group_and_summary():
    # Group 3: 10 records ranked perfectly with offset +1; group 7: 20 records, ranking
    # reversed, no mean error; group 9: 2 records (too small to rank or be the worst).
    t3, t7, t9 = np.arange(10.0), np.arange(20.0), np.array([0.0, 1.0])
    truth = np.concatenate([t3, t7, t9])
    pred = np.concatenate([t3 + 1.0, t7[::-1], t9 + 10.0])
    groups = np.array([3] * 10 + [7] * 20 + [9] * 2)
    result = group_metrics(truth, pred, groups)

    g3, g7, g9 = (result["by_group"][g] for g in ("3", "7", "9"))
    assert (g3["count"], g3["mae"], g3["spearman"]) == (10, 1.0, pytest.approx(1.0))
    assert g3["low_tail"] == {"count": 1, "mae": 1.0, "bias": 1.0}
    assert g7["spearman"] == pytest.approx(-1.0)
    # lowest of group 7 is 0, predicted 19: bias +19; highest 19 predicted 0: bias -19
    assert g7["low_tail"]["bias"] == 19.0 and g7["high_tail"]["bias"] == -19.0
    assert g7["mae"] == pytest.approx(np.mean(np.abs(t7[::-1] - t7)))
    assert g9["spearman"] is None and g9["mae"] == 10.0

    summary = result["summary"]
    # Spearman weighted over the groups that have one: (10 * 1 + 20 * -1) / 30
    assert summary["weighted"]["spearman"] == pytest.approx(-1 / 3)
    # MAE weighted by size is the MAE over all records
    assert summary["weighted"]["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
    assert summary["weighted"]["low_tail_bias"] == pytest.approx((10 * 1 + 20 * 19 + 2 * 10) / 32)
    # Group 9 has the largest MAE but only 2 records: the worst group is 7
    assert summary["worst"]["mae"] == {"group": "7", "value": g7["mae"]}
    assert summary["worst"]["spearman"] == {"group": "7", "value": pytest.approx(-1.0)}
    assert summary["worst"]["high_tail_bias"] == {"group": "7", "value": -19.0}


def test_group_metrics_write_valid_json_for_undefined_values():
    result = group_metrics(np.array([1.0, 2.0]), np.array([1.0, 2.5]), np.array([4, 4]))
    text = json.dumps(result, allow_nan=False)  # raises on NaN
    assert json.loads(text)["summary"]["worst"]["spearman"] is None


def test_group_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="one group per record"):
        group_metrics(np.zeros(3), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="equal-length"):
        regression_metrics(np.zeros(3), np.zeros(4))
