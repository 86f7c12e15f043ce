"""Tests for genre_jax.scores: pure NumPy, fast."""

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from genre_jax import metrics, scores

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


def _crps_bruteforce(samples, target):
    abs_err = np.mean(np.abs(samples - target[:, None]), axis=1)
    spread = np.mean(np.abs(samples[:, :, None] - samples[:, None, :]), axis=(1, 2))
    return float(np.mean(abs_err - 0.5 * spread))


def test_crps_matches_bruteforce_random():
    rng = np.random.default_rng(2)
    for s in (1, 2, 3, 7, 64):
        samples = rng.normal(size=(20, s))
        target = rng.normal(size=20)
        assert scores.crps(samples, target) == pytest.approx(_crps_bruteforce(samples, target), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(samples_target())
def test_crps_matches_bruteforce_property(data):
    samples, target = data
    expected = _crps_bruteforce(samples, target)
    got = scores.crps(samples, target)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # CRPS of an empirical distribution is non-negative.
    assert got >= -1e-9


def test_crps_single_sample_is_absolute_error():
    samples = np.array([[1.5], [-2.0], [0.0]])
    target = np.array([1.0, 1.0, 0.0])
    assert scores.crps(samples, target) == pytest.approx((0.5 + 3.0 + 0.0) / 3)


def test_crps_known_two_point():
    # Samples {0, 1}, y = 0: E|X-y| = 0.5, E|X-X'| = 0.5 -> 0.5 - 0.25.
    assert scores.crps([[0.0, 1.0]], [0.0]) == pytest.approx(0.25)


def test_crps_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="target_N"):
        scores.crps(np.zeros((3, 4)), np.zeros(4))


def test_interval_coverage_known_cases():
    row = np.arange(101.0)  # 90% central interval is exactly [5, 95]
    samples = np.tile(row, (6, 1))
    target = np.array([5.0, 50.0, 95.0, 4.9, 95.1, -10.0])
    assert scores.interval_coverage(samples, target, level=0.9) == pytest.approx(3 / 6)
    # Full range: min..max inclusive.
    assert scores.interval_coverage(samples, target, level=1.0) == pytest.approx(5 / 6)
    # Degenerate samples: only the exact value is covered.
    assert scores.interval_coverage(np.full((2, 5), 1.0), [1.0, 1.1]) == 0.5


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5])
def test_interval_coverage_rejects_bad_level(level):
    with pytest.raises(ValueError, match="level"):
        scores.interval_coverage(np.zeros((2, 3)), np.zeros(2), level=level)


def test_interval_coverage_calibrated_gaussian():
    # Targets drawn from the same distribution as the samples: coverage ~ level.
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(4000, 200))
    target = rng.normal(size=4000)
    assert scores.interval_coverage(samples, target, level=0.8) == pytest.approx(0.8, abs=0.03)




def test_discrete_distribution_metrics_equal_those_of_its_expanded_samples():
    """A discrete distribution with probabilities in multiples of 1/20 is exactly the empirical
    distribution of 20 repeated values: mean, CRPS and quantiles must agree with the sample code."""
    values_S = np.array([0.5, -1.0, 2.0, 0.0])  # unsorted on purpose
    counts_NS = np.array([[5, 5, 5, 5], [0, 20, 0, 0], [1, 2, 3, 14]])
    dist = scores.Discrete(values_S, counts_NS / 20.0)
    samples_NG = np.stack([np.repeat(values_S, c) for c in counts_NS])
    target_N = np.array([0.3, -0.9, 1.7])
    np.testing.assert_allclose(dist.mean(), samples_NG.mean(1))
    np.testing.assert_allclose(dist.crps(target_N), scores.crps(samples_NG, target_N), rtol=1e-12)
    np.testing.assert_allclose(dist.quantile(0.5), [0.0, -1.0, 0.0])  # inverse CDF: the lower median
    np.testing.assert_allclose(dist.quantile(1.0), [2.0, -1.0, 2.0])
    assert dist.coverage(target_N, 0.9) == pytest.approx(2 / 3)  # -0.9 lies outside the point mass at -1
    lo, hi = dist.quantile(0.05), dist.quantile(0.95)
    assert dist.coverage(target_N, 0.9) == np.mean((lo <= target_N) & (target_N <= hi))
    entry = scores.exact_prediction_metrics(dist, [0.0, -1.0, 2.0], target_N, 2.0)
    assert entry["mean"]["rmse"] == pytest.approx(metrics.rmse(samples_NG.mean(1), target_N))
    with pytest.raises(ValueError, match="probs_NS"):
        scores.Discrete(values_S, np.ones((2, 3)))


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
                       for tau in scores.QUANTILE_LEVELS])
    interval = {f"{lv:g}": np.mean([_winkler_reference(lo, hi, y, lv) for lo, hi, y in
                                     zip(quantile_fn((1 - lv) / 2), quantile_fn((1 + lv) / 2), target_N)])
                for lv in scores.INTERVAL_LEVELS}
    return pinball, interval


def test_levels_are_the_standard_grid_and_calibrations():
    from genre_jax import calibration
    assert scores.INTERVAL_LEVELS == calibration.LEVELS
    np.testing.assert_allclose(scores.QUANTILE_LEVELS, np.arange(1, 20) * 0.05, rtol=0, atol=1e-15)


def test_pinball_and_interval_score_hand_computed():
    # tau = 0.9, q = 1: y = 3 -> 0.9 * 2; y = 0 -> 0.1 * 1; mean 0.95.
    np.testing.assert_allclose(scores.pinball_loss([[1.0, 1.0]], [3.0, 0.0], [0.9]), [0.95], rtol=0, atol=_TOL)
    # [0, 2] at level 0.9 (2/alpha = 20): y = 1 inside -> 2; y = 2 on the end -> 2; y = 2.5 -> 2 + 10;
    # y = -0.1 -> 2 + 2.
    got = scores.interval_score([0.0] * 4, [2.0] * 4, [1.0, 2.0, 2.5, -0.1], 0.9)
    assert got == pytest.approx((2 + 2 + 12 + 4) / 4, rel=0, abs=_TOL)
    with pytest.raises(ValueError, match="level"):
        scores.interval_score([0.0], [1.0], [0.5], 1.0)
    with pytest.raises(ValueError, match="levels_P"):
        scores.pinball_loss([[0.0]], [0.0], [0.0])
    with pytest.raises(ValueError, match="quantiles_PN"):
        scores.pinball_loss([[0.0, 1.0]], [0.0], [0.5])


def test_samples_scores_match_a_reference_with_ties():
    samples_NG = np.array([[0.0, 1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0], [-1.0, 3.0, 0.5, 0.5, 8.0]])
    target_N = np.array([1.0, 2.5, -4.0])  # inside; beside a point mass; below every sample
    got = scores.distribution_scores(scores.Samples(samples_NG), target_N)
    pinball, interval = _scores_from_quantiles(lambda q: np.quantile(samples_NG, q, axis=1), target_N)
    assert got["pinball"] == pytest.approx(pinball, rel=0, abs=_TOL)
    assert got["interval_score"] == pytest.approx(interval, rel=0, abs=_TOL)
    assert got["log_score"] is None and got["log_score_floored"] is None  # no density without a KDE
    # the existing keys, exactly as evaluation wrote them before
    assert got["crps"] == scores.crps(samples_NG, target_N)
    assert got["coverage_90"] == scores.interval_coverage(samples_NG, target_N, 0.9)
    assert set(got["interval_score"]) == {"0.5", "0.8", "0.9", "0.95"}


def test_discrete_scores_match_numpys_inverted_cdf_of_expanded_samples():
    """Probabilities in sevenths: no level of either grid is a CDF value (k/7 != j/40), so the inverse
    CDF is unambiguous and NumPy's inverted_cdf quantile of the 7 repeated values is a reference."""
    values_S = np.array([0.5, -1.0, 2.0, 0.0, 3.0])  # unsorted on purpose
    counts_NS = np.array([[1, 2, 1, 3, 0], [0, 7, 0, 0, 0], [2, 1, 1, 1, 2]])
    dist = scores.Discrete(values_S, counts_NS / 7.0)
    samples_NG = np.stack([np.repeat(values_S, c) for c in counts_NS])
    target_N = np.array([0.3, 4.0, -2.0])
    got = scores.distribution_scores(dist, target_N)
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
    dist = scores.Discrete(samples_NG.ravel(), np.kron(np.eye(6), np.ones(7)) / 7)  # row i: its own 7 atoms
    quantiles = np.stack([dist.quantile(t) for t in levels])
    half_crps = 0.5 * scores.crps(samples_NG, target_N)
    assert np.mean(scores.pinball_loss(quantiles, target_N, levels)) == pytest.approx(half_crps, rel=0, abs=_TOL)


def test_interval_score_is_the_sum_of_its_ends_pinball_losses():
    """IS_alpha(l, u; y) = (2 / alpha) (pinball_{alpha/2}(l) + pinball_{1-alpha/2}(u)): an identity of the
    definitions, checked on random intervals with targets inside and outside."""
    rng = np.random.default_rng(6)
    lo = rng.normal(size=40)
    hi = lo + rng.exponential(size=40)
    y = rng.normal(scale=2.0, size=40)
    for level in (0.5, 0.9):
        alpha = 1 - level
        ends = scores.pinball_loss(np.stack([lo, hi]), y, [alpha / 2, 1 - alpha / 2])
        assert scores.interval_score(lo, hi, y, level) == pytest.approx(2 / alpha * ends.sum(), rel=0, abs=_TOL)


def test_discrete_histogram_pools_ties_and_puts_edges_halfway():
    dist = scores.Discrete([2.0, 0.0, 4.0, 1.0, 0.0], [[0.0, 0.125, 0.25, 0.5, 0.125]])
    values, edges, probs = dist.histogram()
    np.testing.assert_array_equal(values, [0.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(edges, [-0.5, 0.5, 1.5, 3.0, 5.0])  # the outer bins mirror their inner half
    np.testing.assert_array_equal(probs, [[0.25, 0.5, 0.0, 0.25]])
    with pytest.raises(ValueError, match="two distinct"):
        scores.Discrete([1.0, 1.0], [[0.5, 0.5]]).histogram()


def test_discrete_log_score_hand_computed_with_edge_cases():
    # bins [-0.5, 0.5) p .25 w 1 | [0.5, 1.5) p .5 w 1 | [1.5, 3) p 0 w 1.5 | [3, 5] p .25 w 2
    dist = scores.Discrete([2.0, 0.0, 4.0, 1.0, 0.0], np.tile([0.0, 0.125, 0.25, 0.5, 0.125], (7, 1)))
    target_N = np.array([0.2, 0.5, 3.9, 5.0, -0.5, 2.0, 7.0])
    floor = -math.log(scores.LOG_DENSITY_FLOOR)
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
    assert scores.distribution_scores(dist, target_N)["log_score"] == score


def test_log_score_is_comparable_across_grids():
    """A uniform density on [0, 1] binned at two resolutions scores -log 1 = 0 on both: the width turns
    bin probabilities into one density."""
    for num_bins in (4, 16):
        values = (np.arange(num_bins) + 0.5) / num_bins
        dist = scores.Discrete(values, np.full((3, num_bins), 1.0 / num_bins))
        assert dist.log_score(np.array([0.01, 0.5, 0.99]))[0] == pytest.approx(0.0, abs=_TOL)
