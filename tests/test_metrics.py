"""Tests for genre_jax.metrics: pure NumPy, fast."""

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genre_jax import metrics

# Bounded floats keep brute-force references free of overflow; the metrics
# themselves are not what limits the range.
_finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def samples_target(draw, max_n=8, max_s=16):
    n = draw(st.integers(1, max_n))
    s = draw(st.integers(1, max_s))
    samples = draw(hnp.arrays(np.float64, (n, s), elements=_finite))
    target = draw(hnp.arrays(np.float64, (n,), elements=_finite))
    return samples, target


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


def _crps_bruteforce(samples, target):
    abs_err = np.mean(np.abs(samples - target[:, None]), axis=1)
    spread = np.mean(np.abs(samples[:, :, None] - samples[:, None, :]), axis=(1, 2))
    return float(np.mean(abs_err - 0.5 * spread))


def test_crps_matches_bruteforce_random():
    rng = np.random.default_rng(2)
    for s in (1, 2, 3, 7, 64):
        samples = rng.normal(size=(20, s))
        target = rng.normal(size=20)
        assert metrics.crps(samples, target) == pytest.approx(_crps_bruteforce(samples, target), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(samples_target())
def test_crps_matches_bruteforce_property(data):
    samples, target = data
    expected = _crps_bruteforce(samples, target)
    got = metrics.crps(samples, target)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # CRPS of an empirical distribution is non-negative.
    assert got >= -1e-9


def test_crps_single_sample_is_absolute_error():
    samples = np.array([[1.5], [-2.0], [0.0]])
    target = np.array([1.0, 1.0, 0.0])
    assert metrics.crps(samples, target) == pytest.approx((0.5 + 3.0 + 0.0) / 3)


def test_crps_known_two_point():
    # Samples {0, 1}, y = 0: E|X-y| = 0.5, E|X-X'| = 0.5 -> 0.5 - 0.25.
    assert metrics.crps([[0.0, 1.0]], [0.0]) == pytest.approx(0.25)


def test_crps_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="target_N"):
        metrics.crps(np.zeros((3, 4)), np.zeros(4))


def test_interval_coverage_known_cases():
    row = np.arange(101.0)  # 90% central interval is exactly [5, 95]
    samples = np.tile(row, (6, 1))
    target = np.array([5.0, 50.0, 95.0, 4.9, 95.1, -10.0])
    assert metrics.interval_coverage(samples, target, level=0.9) == pytest.approx(3 / 6)
    # Full range: min..max inclusive.
    assert metrics.interval_coverage(samples, target, level=1.0) == pytest.approx(5 / 6)
    # Degenerate samples: only the exact value is covered.
    assert metrics.interval_coverage(np.full((2, 5), 1.0), [1.0, 1.1]) == 0.5


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5])
def test_interval_coverage_rejects_bad_level(level):
    with pytest.raises(ValueError, match="level"):
        metrics.interval_coverage(np.zeros((2, 3)), np.zeros(2), level=level)


def test_interval_coverage_calibrated_gaussian():
    # Targets drawn from the same distribution as the samples: coverage ~ level.
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(4000, 200))
    target = rng.normal(size=4000)
    assert metrics.interval_coverage(samples, target, level=0.8) == pytest.approx(0.8, abs=0.03)


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


def test_discrete_distribution_metrics_equal_those_of_its_expanded_samples():
    """A discrete distribution with probabilities in multiples of 1/20 is exactly the empirical
    distribution of 20 repeated values: mean, CRPS and quantiles must agree with the sample code."""
    values_S = np.array([0.5, -1.0, 2.0, 0.0])  # unsorted on purpose
    counts_NS = np.array([[5, 5, 5, 5], [0, 20, 0, 0], [1, 2, 3, 14]])
    dist = metrics.Discrete(values_S, counts_NS / 20.0)
    samples_NG = np.stack([np.repeat(values_S, c) for c in counts_NS])
    target_N = np.array([0.3, -0.9, 1.7])
    np.testing.assert_allclose(dist.mean(), samples_NG.mean(1))
    np.testing.assert_allclose(dist.crps(target_N), metrics.crps(samples_NG, target_N), rtol=1e-12)
    np.testing.assert_allclose(dist.quantile(0.5), [0.0, -1.0, 0.0])  # inverse CDF: the lower median
    np.testing.assert_allclose(dist.quantile(1.0), [2.0, -1.0, 2.0])
    assert dist.coverage(target_N, 0.9) == pytest.approx(2 / 3)  # -0.9 lies outside the point mass at -1
    lo, hi = dist.quantile(0.05), dist.quantile(0.95)
    assert dist.coverage(target_N, 0.9) == np.mean((lo <= target_N) & (target_N <= hi))
    scores = metrics.exact_prediction_metrics(dist, [0.0, -1.0, 2.0], target_N, 2.0)
    assert scores["mean"]["rmse"] == pytest.approx(metrics.rmse(samples_NG.mean(1), target_N))
    with pytest.raises(ValueError, match="probs_NS"):
        metrics.Discrete(values_S, np.ones((2, 3)))


# --- pinball, interval and log scores -----------------------------------------------------------
# References are written out branch by branch (not the vectorized max form the module uses) or come
# from another implementation (NumPy's inverted-CDF quantile). Float64 sums of a few dozen terms of
# size <= 10: 64 * eps64 * 10 is far above their rounding and far below any formula mistake.

_TOL = 64 * np.finfo(np.float64).eps * 10


def _pinball_reference(q, y, tau):
    return tau * (y - q) if y >= q else (1.0 - tau) * (q - y)


def _winkler_reference(lo, hi, y, level):
    alpha = 1.0 - level
    if y < lo:
        return hi - lo + 2.0 / alpha * (lo - y)
    if y > hi:
        return hi - lo + 2.0 / alpha * (y - hi)
    return hi - lo


def _scores_from_quantiles(quantile_fn, target_N):
    """pinball and interval scores from a quantile function (level -> [N]), element by element."""
    pinball = np.mean([[_pinball_reference(q, y, tau) for q, y in zip(quantile_fn(tau), target_N)]
                       for tau in metrics.QUANTILE_LEVELS])
    interval = {f"{lv:g}": np.mean([_winkler_reference(lo, hi, y, lv) for lo, hi, y in
                                     zip(quantile_fn((1 - lv) / 2), quantile_fn((1 + lv) / 2), target_N)])
                for lv in metrics.INTERVAL_LEVELS}
    return pinball, interval


def test_levels_are_the_standard_grid_and_calibrations():
    from genre_jax import calibration
    assert metrics.INTERVAL_LEVELS == calibration.LEVELS
    np.testing.assert_allclose(metrics.QUANTILE_LEVELS, np.arange(1, 20) * 0.05, rtol=0, atol=1e-15)


def test_pinball_and_interval_score_hand_computed():
    # tau = 0.9, q = 1: y = 3 -> 0.9 * 2; y = 0 -> 0.1 * 1; mean 0.95.
    np.testing.assert_allclose(metrics.pinball_loss([[1.0, 1.0]], [3.0, 0.0], [0.9]), [0.95], rtol=0, atol=_TOL)
    # [0, 2] at level 0.9 (2/alpha = 20): y = 1 inside -> 2; y = 2 on the end -> 2; y = 2.5 -> 2 + 10;
    # y = -0.1 -> 2 + 2.
    got = metrics.interval_score([0.0] * 4, [2.0] * 4, [1.0, 2.0, 2.5, -0.1], 0.9)
    assert got == pytest.approx((2 + 2 + 12 + 4) / 4, rel=0, abs=_TOL)
    with pytest.raises(ValueError, match="level"):
        metrics.interval_score([0.0], [1.0], [0.5], 1.0)
    with pytest.raises(ValueError, match="levels_P"):
        metrics.pinball_loss([[0.0]], [0.0], [0.0])
    with pytest.raises(ValueError, match="quantiles_PN"):
        metrics.pinball_loss([[0.0, 1.0]], [0.0], [0.5])


def test_samples_scores_match_a_reference_with_ties():
    samples_NG = np.array([[0.0, 1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0], [-1.0, 3.0, 0.5, 0.5, 8.0]])
    target_N = np.array([1.0, 2.5, -4.0])  # inside; beside a point mass; below every sample
    got = metrics.distribution_scores(metrics.Samples(samples_NG), target_N)
    pinball, interval = _scores_from_quantiles(lambda q: np.quantile(samples_NG, q, axis=1), target_N)
    assert got["pinball"] == pytest.approx(pinball, rel=0, abs=_TOL)
    assert got["interval_score"] == pytest.approx(interval, rel=0, abs=_TOL)
    assert got["log_score"] is None and got["log_score_floored"] is None  # no density without a KDE
    # the existing keys, exactly as evaluation wrote them before
    assert got["crps"] == metrics.crps(samples_NG, target_N)
    assert got["coverage_90"] == metrics.interval_coverage(samples_NG, target_N, 0.9)
    assert set(got["interval_score"]) == {"0.5", "0.8", "0.9", "0.95"}


def test_discrete_scores_match_numpys_inverted_cdf_of_expanded_samples():
    """Probabilities in sevenths: no level of either grid is a CDF value (k/7 != j/40), so the inverse
    CDF is unambiguous and NumPy's inverted_cdf quantile of the 7 repeated values is a reference."""
    values_S = np.array([0.5, -1.0, 2.0, 0.0, 3.0])  # unsorted on purpose
    counts_NS = np.array([[1, 2, 1, 3, 0], [0, 7, 0, 0, 0], [2, 1, 1, 1, 2]])
    dist = metrics.Discrete(values_S, counts_NS / 7.0)
    samples_NG = np.stack([np.repeat(values_S, c) for c in counts_NS])
    target_N = np.array([0.3, 4.0, -2.0])
    got = metrics.distribution_scores(dist, target_N)
    pinball, interval = _scores_from_quantiles(
        lambda q: np.quantile(samples_NG, q, axis=1, method="inverted_cdf"), target_N)
    assert got["pinball"] == pytest.approx(pinball, rel=0, abs=_TOL)
    assert got["interval_score"] == pytest.approx(interval, rel=0, abs=_TOL)
    assert got["crps"] == dist.crps(target_N) and got["coverage_90"] == dist.coverage(target_N, 0.9)


def test_pinball_at_midpoint_levels_is_half_the_crps():
    """For G equal-weight atoms the inverse CDF is constant on ((k-1)/G, k/G] and the pinball loss
    linear in tau there, so the midpoint rule is exact: (1/G) sum_k pinball_{(k-1/2)/G} = CRPS / 2."""
    rng = np.random.default_rng(5)
    samples_NG = rng.normal(size=(6, 7))
    target_N = rng.normal(size=6)
    levels = (np.arange(7) + 0.5) / 7
    dist = metrics.Discrete(samples_NG.ravel(), np.kron(np.eye(6), np.ones(7)) / 7)  # row i: its own 7 atoms
    quantiles = np.stack([dist.quantile(t) for t in levels])
    half_crps = 0.5 * metrics.crps(samples_NG, target_N)
    assert np.mean(metrics.pinball_loss(quantiles, target_N, levels)) == pytest.approx(half_crps, rel=0, abs=_TOL)


def test_interval_score_is_the_sum_of_its_ends_pinball_losses():
    """IS_alpha(l, u; y) = (2 / alpha) (pinball_{alpha/2}(l) + pinball_{1-alpha/2}(u)): an identity of the
    definitions, checked on random intervals with targets inside and outside."""
    rng = np.random.default_rng(6)
    lo = rng.normal(size=40)
    hi = lo + rng.exponential(size=40)
    y = rng.normal(scale=2.0, size=40)
    for level in (0.5, 0.9):
        alpha = 1 - level
        ends = metrics.pinball_loss(np.stack([lo, hi]), y, [alpha / 2, 1 - alpha / 2])
        assert metrics.interval_score(lo, hi, y, level) == pytest.approx(2 / alpha * ends.sum(), rel=0, abs=_TOL)


def test_discrete_histogram_pools_ties_and_puts_edges_halfway():
    dist = metrics.Discrete([2.0, 0.0, 4.0, 1.0, 0.0], [[0.0, 0.125, 0.25, 0.5, 0.125]])
    values, edges, probs = dist.histogram()
    np.testing.assert_array_equal(values, [0.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(edges, [-0.5, 0.5, 1.5, 3.0, 5.0])  # the outer bins mirror their inner half
    np.testing.assert_array_equal(probs, [[0.25, 0.5, 0.0, 0.25]])
    with pytest.raises(ValueError, match="two distinct"):
        metrics.Discrete([1.0, 1.0], [[0.5, 0.5]]).histogram()


def test_discrete_log_score_hand_computed_with_edge_cases():
    # bins [-0.5, 0.5) p .25 w 1 | [0.5, 1.5) p .5 w 1 | [1.5, 3) p 0 w 1.5 | [3, 5] p .25 w 2
    dist = metrics.Discrete([2.0, 0.0, 4.0, 1.0, 0.0], np.tile([0.0, 0.125, 0.25, 0.5, 0.125], (7, 1)))
    target_N = np.array([0.2, 0.5, 3.9, 5.0, -0.5, 2.0, 7.0])
    floor = -math.log(metrics.LOG_DENSITY_FLOOR)
    expected_N = [-math.log(0.25), -math.log(0.5),  # the left edge belongs to the bin above it
                  -math.log(0.25 / 2), -math.log(0.25 / 2),  # the wide outer bin, closed on the right
                  -math.log(0.25),  # the lowest edge is inside
                  floor,  # a bin of probability 0
                  floor]  # outside every bin
    score, floored = dist.log_score(target_N)
    assert score == pytest.approx(np.mean(expected_N), rel=0, abs=_TOL)
    assert floored == pytest.approx(2 / 7)
    assert np.isfinite(score)
    assert math.isnan(dist.log_score(np.array([0.0, np.nan, 1, 1, 1, 1, 1]))[0])  # NaN propagates
    assert metrics.distribution_scores(dist, target_N)["log_score"] == score


def test_log_score_is_comparable_across_grids():
    """A uniform density on [0, 1] binned at two resolutions scores -log 1 = 0 on both: the width turns
    bin probabilities into one density."""
    for num_bins in (4, 16):
        values = (np.arange(num_bins) + 0.5) / num_bins
        dist = metrics.Discrete(values, np.full((3, num_bins), 1.0 / num_bins))
        assert dist.log_score(np.array([0.01, 0.5, 0.99]))[0] == pytest.approx(0.0, abs=_TOL)
