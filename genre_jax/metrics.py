"""Host-side regression metrics for decoding-based regression.

Predictions arrive as G sampled decodes per input plus one greedy decode, all
in standardized "z" units of the target. Everything here runs in NumPy float64
after predictions are gathered from devices, so results do not depend on the
accelerator's precision or on how the batch was sharded.

Conventions shared by every function:
  * Inputs are array-likes; they are converted to float64 arrays and
    never modified.
  * Shape problems raise ValueError naming the offending argument, because a
    silently broadcast (N,) vs (N, 1) comparison yields plausible-looking but
    wrong numbers.
  * NaN inputs are not filtered: they propagate, so a broken decode is visible
    in the metric instead of being quietly dropped.
"""

from __future__ import annotations

import numpy as np

AGGREGATIONS = ("mean", "median", "greedy")

# Aggregations that reduce the sample axis; "greedy" is a separate decode and
# cannot be computed from samples.
_SAMPLE_AGGREGATIONS = ("mean", "median")


def _as_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.ndim != 1 or target.ndim != 1:
        raise ValueError(
            f"pred and target must be 1-D, got shapes {pred.shape} and {target.shape}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {pred.shape} and {target.shape}"
        )
    if pred.size == 0:
        raise ValueError("pred and target are empty; metrics need at least one example")
    return pred, target


def as_samples(samples_NG, name: str = "samples_NG") -> np.ndarray:
    samples = np.asarray(samples_NG, dtype=np.float64)
    if samples.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, G), got shape {samples.shape}")
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"{name} must have N >= 1 and G >= 1, got shape {samples.shape}")
    return samples


def as_samples_and_target(samples_NG, target_N) -> tuple[np.ndarray, np.ndarray]:
    samples = as_samples(samples_NG)
    target = np.asarray(target_N, dtype=np.float64)
    if target.shape != samples.shape[:1]:
        raise ValueError(
            f"target_N must have shape ({samples.shape[0]},) to match samples_NG "
            f"{samples.shape}, got {target.shape}"
        )
    return samples, target


def rmse(pred, target) -> float:
    """Root mean squared error."""
    pred, target = _as_pair(pred, target)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


def mae(pred, target) -> float:
    """Mean absolute error."""
    pred, target = _as_pair(pred, target)
    return float(np.mean(np.abs(pred - target)))


def r2(pred, target) -> float:
    """Coefficient of determination, 1 - SSE/SST.

    Returns nan when the target is constant (SST == 0): R^2 is undefined there,
    and any finite stand-in would be mistaken for a real score.
    """
    pred, target = _as_pair(pred, target)
    sse = np.sum((pred - target) ** 2)
    sst = np.sum((target - np.mean(target)) ** 2)
    if sst == 0.0:
        return float("nan")
    return float(1.0 - sse / sst)


def _rank_correlation(scipy_fn, pred, target) -> float:
    """A scipy rank correlation with the degenerate cases defined for averaging.

    Constant pred -> 0.0: a collapsed model that predicts one value carries no
    ranking information, and 0.0 keeps averages and learning curves finite
    where scipy would return nan. Constant target (including N == 1) -> nan,
    matching r2: the metric is undefined for the data, not a model failure.
    """
    pred, target = _as_pair(pred, target)
    # Checked before pred so that a degenerate evaluation set reads as nan
    # even when the model also collapsed.
    if np.all(target == target[0]):
        return float("nan")
    if np.all(pred == pred[0]):
        return 0.0
    return float(scipy_fn(pred, target).statistic)


def spearman(pred, target) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr; ties get average ranks)."""
    import scipy.stats  # here, not at the top: importing it costs every launch ~2 s before any work
    return _rank_correlation(scipy.stats.spearmanr, pred, target)


def kendall(pred, target) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau)."""
    import scipy.stats
    return _rank_correlation(scipy.stats.kendalltau, pred, target)


def regression_metrics(pred_z, target_z, y_std: float) -> dict[str, float]:
    """rmse, mae, r2, spearman, kendall in z units, plus rmse_original = rmse * y_std.

    Only RMSE is reported in original units because MAE scales the same way and
    r2/spearman are scale-free; y_std is the standardization scale of the target.
    """
    y_std = float(y_std)
    if not (np.isfinite(y_std) and y_std > 0.0):
        raise ValueError(f"y_std must be a positive finite number, got {y_std}")
    pred_z, target_z = _as_pair(pred_z, target_z)
    rmse_z = rmse(pred_z, target_z)
    return {
        "rmse": rmse_z,
        "mae": mae(pred_z, target_z),
        "r2": r2(pred_z, target_z),
        "spearman": spearman(pred_z, target_z),
        "kendall": kendall(pred_z, target_z),
        "rmse_original": float(rmse_z * y_std),
    }


def aggregate_samples(samples_NG, how: str) -> np.ndarray:
    """Reduce the last (sample) axis with 'mean' or 'median'; returns float64."""
    if how not in _SAMPLE_AGGREGATIONS:
        raise ValueError(
            f"how must be one of {_SAMPLE_AGGREGATIONS}, got {how!r} "
            "('greedy' is its own decode, not an aggregation of samples)"
        )
    samples = np.asarray(samples_NG, dtype=np.float64)
    if samples.ndim < 1 or samples.shape[-1] == 0:
        raise ValueError(f"samples must have a non-empty last axis, got shape {samples.shape}")
    if how == "mean":
        return np.mean(samples, axis=-1)
    return np.median(samples, axis=-1)


def prediction_metrics(samples_NG, greedy_N, target_z_N, y_std) -> dict[str, dict[str, float]]:
    """regression_metrics for each way of turning decodes into one prediction.

    Keys follow AGGREGATIONS: 'mean' and 'median' of the G samples, and the
    greedy decode.
    """
    samples, target = as_samples_and_target(samples_NG, target_z_N)
    greedy = np.asarray(greedy_N, dtype=np.float64)
    if greedy.shape != target.shape:
        raise ValueError(
            f"greedy_N must have shape {target.shape} to match samples_NG "
            f"{samples.shape}, got {greedy.shape}"
        )
    point = {
        "mean": aggregate_samples(samples, "mean"),
        "median": aggregate_samples(samples, "median"),
        "greedy": greedy,
    }
    return {how: regression_metrics(point[how], target, y_std) for how in AGGREGATIONS}


def error_vs_num_samples(
    samples_NG,
    target_N,
    counts=(1, 2, 4, 8, 16, 32, 64, 128),
    how: str = "mean",
) -> dict[int, float]:
    """RMSE of the `how`-aggregate of the first k samples, for each k in counts with k <= G.

    Uses a prefix rather than a random subset so that curves are deterministic
    and nested (the k=4 estimate extends the k=2 one). Counts larger than G are
    skipped rather than rejected, so one default list serves every G.
    """
    samples, target = as_samples_and_target(samples_NG, target_N)
    result: dict[int, float] = {}
    for k in counts:
        k = int(k)
        if k < 1:
            raise ValueError(f"counts must be positive, got {k}")
        if k <= samples.shape[1]:
            result[k] = rmse(aggregate_samples(samples[:, :k], how), target)
    return result
