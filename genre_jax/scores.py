"""Scores of a predictive distribution, on the host in NumPy float64 and z units: central-interval
coverage, CRPS, pinball loss, the interval (Winkler) score and the log score, for the two kinds of
distribution a decoder gives (``Samples``: G draws per row; ``Discrete``: the exact distribution
over the tokenizer's support, ``exact.predict``). ``distribution_scores`` is the block every split
of a results.json entry carries. Point metrics (RMSE, R², rank correlations) are ``metrics.py``'s;
the conventions there (float64 copies, shape errors naming the argument, NaN propagated) hold here.
"""
from __future__ import annotations

import numpy as np

from genre_jax.metrics import AGGREGATIONS, as_samples, as_samples_and_target, regression_metrics, rmse


def interval_coverage(samples_NG, target_N, level: float = 0.9) -> float:
    """Fraction of targets inside each row's central empirical interval.

    The interval is [q((1-level)/2), q((1+level)/2)] of the row's samples using
    NumPy's default linear-interpolation quantiles, with both ends inclusive so
    that level=1.0 (the min..max range) covers every target equal to a sample.
    With few samples the achievable levels are coarse, so compare against the
    nominal level only when G is reasonably large.
    """
    level = float(level)
    if not 0.0 < level <= 1.0:
        raise ValueError(f"level must be in (0, 1], got {level}")
    samples, target = as_samples_and_target(samples_NG, target_N)
    lo, hi = np.quantile(samples, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=1)
    return float(np.mean((lo <= target) & (target <= hi)))


def crps(samples_NG, target_N) -> float:
    """Mean CRPS of each row's empirical distribution: E|X-y| - 0.5 E|X-X'|.

    X and X' are independent draws from the G samples (pairs i == j included),
    which is the CRPS of the empirical CDF itself; hence G=1 gives |x - y|.
    This is not the "fair" G(G-1) estimator, which is undefined for G=1.

    E|X-X'| uses the sorted-sample identity
        sum_{i,j} |x_i - x_j| = 2 * sum_k (2k - G - 1) x_(k),   k = 1..G,
    which is exact and needs O(G log G) time and O(G) memory per row instead of
    materializing the G x G difference matrix.
    """
    samples, target = as_samples_and_target(samples_NG, target_N)
    s = samples.shape[1]
    abs_err = np.mean(np.abs(samples - target[:, None]), axis=1)
    weights = 2.0 * np.arange(1, s + 1, dtype=np.float64) - s - 1.0
    spread = 2.0 * (np.sort(samples, axis=1) @ weights) / (s * s)
    return float(np.mean(abs_err - 0.5 * spread))


class Samples:
    """Row-wise empirical distributions of G samples, with ``Discrete``'s interface (mean, quantile,
    crps, coverage, log_score), so one report serves sampled and exact evaluations."""

    def __init__(self, samples_NG):
        self.samples_NG = as_samples(samples_NG)

    def mean(self) -> np.ndarray:
        return self.samples_NG.mean(axis=1)

    def quantile(self, q: float) -> np.ndarray:
        """NumPy's linear-interpolation quantile of each row, as ``interval_coverage`` uses."""
        return np.quantile(self.samples_NG, q, axis=1)

    def crps(self, target_N) -> float:
        return crps(self.samples_NG, target_N)

    def coverage(self, target_N, level: float = 0.9) -> float:
        return interval_coverage(self.samples_NG, target_N, level)

    def log_score(self, target_N) -> None:
        """None: samples have no density without an estimate of one (a KDE's bandwidth would be a choice
        the score depends on), so only the exact distribution gets a log score."""
        return None


# ---------------------------------------------------------------------------------------------
# Exact discrete distributions: every value a decoder can emit (values_S) with its probability per
# input (probs_NS), as ``exact.predict`` returns them. No Monte-Carlo noise.


class Discrete:
    """Row-wise discrete distributions over shared support values, sorted once."""

    def __init__(self, values_S, probs_NS):
        values = np.asarray(values_S, np.float64)
        probs = np.asarray(probs_NS, np.float64)
        if values.ndim != 1 or probs.ndim != 2 or probs.shape[1] != values.shape[0]:
            raise ValueError(f"probs_NS must have shape (N, {values.shape}), got {probs.shape}")
        order = np.argsort(values, kind="stable")
        self.values_S = values[order]
        probs = probs[:, order]
        self.probs_NS = probs / probs.sum(axis=1, keepdims=True)  # float32 probabilities sum to 1 +- 1e-6
        self.cdf_NS = np.cumsum(self.probs_NS, axis=1)

    def mean(self) -> np.ndarray:
        return self.probs_NS @ self.values_S

    def quantile(self, q: float) -> np.ndarray:
        """The inverse CDF: the smallest support value whose CDF reaches q."""
        index_N = np.sum(self.cdf_NS < q - 1e-12, axis=1)
        return self.values_S[np.minimum(index_N, self.values_S.shape[0] - 1)]

    def crps(self, target_N) -> float:
        """Mean CRPS, E|X - y| - E|X - X'| / 2, with E|X - X'| = 2 * integral of F (1 - F)."""
        target = np.asarray(target_N, np.float64)
        abs_err = np.sum(self.probs_NS * np.abs(self.values_S[None, :] - target[:, None]), axis=1)
        cdf = self.cdf_NS[:, :-1]
        spread = 2.0 * np.sum(cdf * (1.0 - cdf) * np.diff(self.values_S)[None, :], axis=1)
        return float(np.mean(abs_err - 0.5 * spread))

    def coverage(self, target_N, level: float = 0.9) -> float:
        """Fraction of targets inside [Q((1 - level) / 2), Q((1 + level) / 2)], both ends included."""
        target = np.asarray(target_N, np.float64)
        lo, hi = self.quantile((1.0 - level) / 2.0), self.quantile((1.0 + level) / 2.0)
        return float(np.mean((lo <= target) & (target <= hi)))

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """(values_U, probs_NU): each distinct support value once, with the probability of every
        sequence that decodes to it (IEEE's several zeros; values_S is sorted, so ties are adjacent)."""
        values_U, first_U = np.unique(self.values_S, return_index=True)
        return values_U, np.add.reduceat(self.probs_NS, first_U, axis=1)

    def histogram(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values_U, edges_U1, probs_NU): the distribution as a histogram with one bin per distinct
        support value (tied values, e.g. IEEE's several zeros, pooled). Bins meet halfway between
        neighbouring values, where the normalized tokenizer's rounding puts them too, so a uniform grid
        gives every bin the grid's width; the outer bins reach as far out as their inner half. Needs two
        distinct values (a tokenizer always has them)."""
        values_U, probs_NU = self.pooled()
        if values_U.shape[0] < 2:
            raise ValueError(f"a histogram needs two distinct support values, got {values_U}")
        mid = (values_U[1:] + values_U[:-1]) / 2.0
        edges_U1 = np.concatenate([[2.0 * values_U[0] - mid[0]], mid, [2.0 * values_U[-1] - mid[-1]]])
        return values_U, edges_U1, probs_NU

    def log_score(self, target_N) -> tuple[float, float]:
        """(mean log score, fraction of targets floored): -log of the histogram's density at y,
        p_bin / width_bin (``histogram``), in z units (add log y_std for original units). Dividing by
        the width makes it a density, so tokenizers with other grids, and continuous models, are
        compared on one scale. Bins are [e_i, e_i+1), the last one closed. A target with no mass
        (outside every bin, or in a bin of probability 0) scores -log LOG_DENSITY_FLOOR, never inf;
        a NaN target stays NaN."""
        target = np.asarray(target_N, np.float64)
        _, edges_U1, probs_NU = self.histogram()
        if target.shape != probs_NU.shape[:1]:
            raise ValueError(f"target_N must have shape ({probs_NU.shape[0]},), got {target.shape}")
        num_bins = probs_NU.shape[1]
        bin_N = np.searchsorted(edges_U1, target, side="right") - 1
        bin_N = np.where(target == edges_U1[-1], num_bins - 1, bin_N)
        inside = (bin_N >= 0) & (bin_N < num_bins)
        safe_N = np.clip(bin_N, 0, num_bins - 1)
        p_N = np.where(inside, probs_NU[np.arange(target.shape[0]), safe_N], 0.0)
        density_N = p_N / np.diff(edges_U1)[safe_N]
        floored = density_N < LOG_DENSITY_FLOOR
        score_N = np.where(np.isnan(target), np.nan, -np.log(np.maximum(density_N, LOG_DENSITY_FLOOR)))
        return float(np.mean(score_N)), float(np.mean(floored))

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """samples_NG by inverse-CDF sampling (kept beside exact scores for sample-based analyses)."""
        u_NG = rng.random((self.cdf_NS.shape[0], num_samples))
        index = np.stack([np.searchsorted(c, u, side="right") for c, u in zip(self.cdf_NS, u_NG)])
        return self.values_S[np.minimum(index, self.values_S.shape[0] - 1)]


def exact_prediction_metrics(dist: Discrete, greedy_N, target_z_N, y_std) -> dict[str, dict[str, float]]:
    """``prediction_metrics``' schema from an exact distribution: its mean, its median, the greedy decode."""
    point = {"mean": dist.mean(), "median": dist.quantile(0.5), "greedy": np.asarray(greedy_N, np.float64)}
    return {how: regression_metrics(point[how], target_z_N, y_std) for how in AGGREGATIONS}


# ---------------------------------------------------------------------------------------------
# Proper scores beyond CRPS (what ScoringBench-style evaluation reports): pinball loss at quantile
# levels, the interval (Winkler) score of central intervals, the log score of the exact
# distribution. Quantiles and intervals are each distribution's own (``quantile``), the ones its
# coverage is measured on, so the scores of one results entry describe one set of intervals.

# 19 levels 0.05, 0.10, ..., 0.95: the usual grid of probabilistic-forecast benchmarks, the central
# intervals' ends at 0.9 (0.05, 0.95) and 0.8 (0.1, 0.9) among them. Their mean pinball loss is a
# 19-point approximation of CRPS / 2 (CRPS = 2 ∫₀¹ pinball_τ dτ, Gneiting & Raftery 2007 eq. 21).
QUANTILE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
# The central intervals' levels: calibration.LEVELS (a test keeps them equal; metrics sits below
# calibration in the import order, so the tuple is written here).
INTERVAL_LEVELS = (0.5, 0.8, 0.9, 0.95)
# The log score's floor on the predicted density (per z unit): a target where the histogram has no
# mass (outside every bin, or a bin of probability 0, or one underflowed in float32) would score
# +inf and dominate any mean. It scores -log(1e-6) = 13.8 nats instead, about a standard normal's
# density 5 sigma out; ``log_score_floored`` reports how many targets hit the floor.
LOG_DENSITY_FLOOR = 1e-6


def pinball_loss(quantiles_PN, target_N, levels_P) -> np.ndarray:
    """[Q] mean pinball (quantile) loss per level: ρ_τ(y − q) = max(τ (y − q), (τ − 1)(y − q))."""
    q = np.asarray(quantiles_PN, np.float64)
    target = np.asarray(target_N, np.float64)
    tau = np.asarray(levels_P, np.float64)
    if q.shape != (tau.shape[0], target.shape[0]):
        raise ValueError(f"quantiles_PN must have shape {(tau.shape[0], target.shape[0])}, got {q.shape}")
    if np.any((tau <= 0.0) | (tau >= 1.0)):
        raise ValueError(f"levels_P must lie in (0, 1), got {tau}")
    diff = target[None, :] - q
    return np.mean(np.maximum(tau[:, None] * diff, (tau[:, None] - 1.0) * diff), axis=1)


def interval_score(lower_N, upper_N, target_N, level: float) -> float:
    """Mean interval (Winkler) score of central intervals at ``level`` (α = 1 − level; Gneiting &
    Raftery 2007 eq. 43): (u − l) + (2/α)(l − y)·1[y < l] + (2/α)(y − u)·1[y > u]. Lower is better;
    a target on an end is inside, as in ``interval_coverage``."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi, target = (np.asarray(a, np.float64) for a in (lower_N, upper_N, target_N))
    alpha = 1.0 - level
    penalty = np.maximum(lo - target, 0.0) + np.maximum(target - hi, 0.0)
    return float(np.mean(hi - lo + (2.0 / alpha) * penalty))


def quantile_scores(dist, target_N, interval_levels=INTERVAL_LEVELS, quantile_levels=QUANTILE_LEVELS) -> dict:
    """Pinball loss (mean over ``quantile_levels``), the interval score per level (keyed '0.9' as
    calibration keys levels) and the log score with its floored fraction (None for ``Samples``)."""
    target = np.asarray(target_N, np.float64)
    quantiles_PN = np.stack([dist.quantile(t) for t in quantile_levels])
    log = dist.log_score(target)
    return {"pinball": float(np.mean(pinball_loss(quantiles_PN, target, quantile_levels))),
            "interval_score": {f"{level:g}": interval_score(dist.quantile((1.0 - level) / 2.0),
                                                            dist.quantile((1.0 + level) / 2.0), target, level)
                               for level in interval_levels},
            "log_score": None if log is None else log[0], "log_score_floored": None if log is None else log[1]}


def distribution_scores(dist, target_N) -> dict:
    """The ``distribution`` block of a results entry, for a ``Samples`` or a ``Discrete``: crps and
    coverage_90 (as they always were), then ``quantile_scores``. All in z units."""
    return {"crps": dist.crps(target_N), "coverage_90": dist.coverage(target_N, 0.9),
            **quantile_scores(dist, target_N)}
