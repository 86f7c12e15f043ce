"""Tests for genre_jax.metrics (point metrics): pure NumPy, fast."""

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genre_jax import metrics

# --- point metrics -----------------------------------------------------------


def test_rmse_mae_r2_hand_computed():
    pred = [1.0, 2.0, 3.0, 4.0]
    target = [1.0, 3.0, 2.0, 6.0]
    # errors: 0, -1, 1, -2 -> SSE 6, |e| sum 4; target mean 3 -> SST 4+0+1+9=14
    assert metrics.rmse(pred, target) == pytest.approx(math.sqrt(6 / 4))
    assert metrics.mae(pred, target) == pytest.approx(1.0)
    assert metrics.r2(pred, target) == pytest.approx(1 - 6 / 14)


def test_r2_can_be_negative_and_nan_for_constant_target():
    assert metrics.r2([3.0, 1.0], [1.0, 3.0]) == pytest.approx(1 - 8 / 2)
    assert math.isnan(metrics.r2([1.0, 2.0], [5.0, 5.0]))


def test_perfect_predictions():
    y = np.array([0.3, -1.2, 2.5, 0.0, 0.7])
    out = metrics.regression_metrics(y, y, y_std=3.0)
    assert out == {"rmse": 0.0, "mae": 0.0, "r2": 1.0, "spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "rmse_original": 0.0}


def test_regression_metrics_keys_types_and_scaling():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=50), rng.normal(size=50)
    out = metrics.regression_metrics(pred, target, y_std=2.5)
    assert set(out) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
    assert all(type(v) is float for v in out.values())
    assert out["rmse_original"] == pytest.approx(2.5 * out["rmse"])
    assert out["rmse"] == pytest.approx(metrics.rmse(pred, target))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_regression_metrics_rejects_bad_y_std(bad):
    with pytest.raises(ValueError, match="y_std"):
        metrics.regression_metrics([1.0, 2.0], [1.0, 3.0], y_std=bad)


def test_spearman_matches_scipy_random():
    rng = np.random.default_rng(1)
    for _ in range(10):
        pred, target = rng.normal(size=30), rng.normal(size=30)
        expected = scipy.stats.spearmanr(pred, target).statistic
        assert metrics.spearman(pred, target) == pytest.approx(expected)


def test_kendall_counts_concordant_pairs():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=25), rng.normal(size=25)  # no ties: tau-b = tau-a
    i, j = np.triu_indices(25, 1)
    sign = np.sign(pred[i] - pred[j]) * np.sign(target[i] - target[j])
    assert metrics.kendall(pred, target) == pytest.approx(sign.sum() / len(i))
    assert metrics.kendall(target, target) == pytest.approx(1.0)
    assert metrics.kendall(np.zeros(5), target[:5]) == 0.0
    assert np.isnan(metrics.kendall(pred[:5], np.ones(5)))


def test_spearman_ties():
    pred = [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    target = [0.5, 0.1, 0.2, 0.9, 0.9, 0.3]
    expected = scipy.stats.spearmanr(pred, target).statistic
    assert metrics.spearman(pred, target) == pytest.approx(expected)
    # Monotone transform with ties on both sides is still a perfect correlation.
    assert metrics.spearman([1, 1, 2, 3], [10, 10, 20, 30]) == pytest.approx(1.0)


def test_spearman_constant_pred_is_zero_and_constant_target_is_nan():
    assert metrics.spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert math.isnan(metrics.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    assert math.isnan(metrics.spearman([1.0], [1.0]))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(3, 20).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, (n,), elements=st.integers(-3, 3).map(float)),
            hnp.arrays(np.float64, (n,), elements=st.integers(-3, 3).map(float)),
        )
    )
)
def test_spearman_matches_scipy_with_heavy_ties(pair):
    # Small integer ranges force many ties, where rank averaging matters.
    pred, target = pair
    got = metrics.spearman(pred, target)
    if np.all(target == target[0]):
        assert math.isnan(got)
    elif np.all(pred == pred[0]):
        assert got == 0.0
    else:
        assert got == pytest.approx(scipy.stats.spearmanr(pred, target).statistic)


@pytest.mark.parametrize("fn", [metrics.rmse, metrics.mae, metrics.r2, metrics.spearman])
def test_point_metrics_reject_bad_shapes(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


# --- aggregation and per-aggregation metrics --------------------------------


def test_aggregate_samples_hand_made():
    samples = np.array([[1.0, 2.0, 9.0], [0.0, 0.0, 3.0], [-1.0, 1.0, 0.0]])
    np.testing.assert_allclose(metrics.aggregate_samples(samples, "mean"), [4.0, 1.0, 0.0])
    np.testing.assert_allclose(metrics.aggregate_samples(samples, "median"), [2.0, 0.0, 0.0])
    even = np.array([[1.0, 2.0, 3.0, 10.0]])
    np.testing.assert_allclose(metrics.aggregate_samples(even, "median"), [2.5])


@pytest.mark.parametrize("how", ["greedy", "mode", ""])
def test_aggregate_samples_rejects_unknown(how):
    with pytest.raises(ValueError, match="how"):
        metrics.aggregate_samples(np.zeros((2, 3)), how)


def test_prediction_metrics_structure_and_values():
    samples = np.array([[1.0, 2.0, 9.0], [0.0, 0.0, 3.0], [-1.0, 1.0, 0.0]])
    greedy = np.array([2.0, 0.5, 0.0])
    target = np.array([2.0, 0.0, 0.0])
    out = metrics.prediction_metrics(samples, greedy, target, y_std=2.0)
    assert tuple(out) == metrics.AGGREGATIONS
    assert out["median"]["rmse"] == 0.0
    assert out["mean"]["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0) / 3))
    assert out["greedy"]["mae"] == pytest.approx(0.5 / 3)
    assert out["greedy"]["rmse_original"] == pytest.approx(2.0 * math.sqrt(0.25 / 3))


def test_prediction_metrics_shape_errors():
    samples, greedy, target = np.zeros((4, 3)), np.zeros(4), np.arange(4.0)
    with pytest.raises(ValueError, match="greedy_N"):
        metrics.prediction_metrics(samples, np.zeros(5), target, 1.0)
    with pytest.raises(ValueError, match="target_N"):
        metrics.prediction_metrics(samples, greedy, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        metrics.prediction_metrics(np.zeros(4), greedy, target, 1.0)
    with pytest.raises(ValueError, match="G >= 1"):
        metrics.prediction_metrics(np.zeros((4, 0)), greedy, target, 1.0)


# --- distributional metrics --------------------------------------------------


def test_error_vs_num_samples_shapes_and_values():
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(10, 20))
    target = rng.normal(size=10)
    out = metrics.error_vs_num_samples(samples, target)
    assert list(out) == [1, 2, 4, 8, 16]
    assert all(type(k) is int and type(v) is float for k, v in out.items())
    assert out[1] == pytest.approx(metrics.rmse(samples[:, 0], target))
    assert out[8] == pytest.approx(metrics.rmse(samples[:, :8].mean(axis=1), target))
    med = metrics.error_vs_num_samples(samples, target, counts=(3, 20, 21), how="median")
    assert list(med) == [3, 20]
    assert med[20] == pytest.approx(metrics.rmse(np.median(samples, axis=1), target))


def test_error_vs_num_samples_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        metrics.error_vs_num_samples(np.zeros((2, 3)), np.zeros(2), counts=(0, 1))
    with pytest.raises(ValueError, match="how"):
        metrics.error_vs_num_samples(np.zeros((2, 3)), np.zeros(2), how="greedy")
    with pytest.raises(ValueError, match="target_N"):
        metrics.error_vs_num_samples(np.zeros((2, 3)), np.zeros(3))
