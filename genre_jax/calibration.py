"""Post-hoc calibration of a decoder's predictive distribution, fitted on the validation split only.

RL sharpens the decoder: its samples cluster and central intervals under-cover (test 90 % coverage
over the `cpu` table: CE 0.82, ReMax 0.38, GenRe² 0.47). Two remedies that leave training alone:

- **temperature** (``eval.calibration`` temperature | both): the sampling temperature T, applied to
  every token's logits as the sampler does, chosen from ``TEMPERATURES`` to minimize the validation
  CRPS (a proper score: it rewards coverage and sharpness together). The tempered distribution is
  a full predictive distribution: its mean, quantiles, CRPS and coverage are reported at T*.
- **conformal** (conformal | both): split-conformal intervals around the reported mean prediction,
  ŷ ± q_level, with q_level the ⌈(n + 1)·level⌉-th smallest absolute validation residual
  (Vovk et al. 2005; Lei et al. 2018): marginal coverage ≥ level on exchangeable data, whatever the
  model does.

Both are written to ``<workdir>/eval/<method>/calibration.json`` and into ``results.json``, with the
raw distribution's numbers beside them at every level of ``LEVELS``.
"""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np

from genre_jax import metrics, paths, scores

CALIBRATIONS = ("none", "temperature", "conformal", "both")
LEVELS = (0.5, 0.8, 0.9, 0.95)
# Up to T = 16: with a top of 4, the validation CRPS of 35 of 296 calibrated claim-study runs was
# still falling there. At 16 a logit gap of 16 nats (a 10⁷:1 preference) is down to e:1, so what RL
# sharpened is undone; a fit that still ends at the top is flagged (``at_grid_top``). The sampled path's
# descent stops where the CRPS turns, the exact path scores the whole grid in one decoder pass.
TEMPERATURES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0, 11.0, 16.0)
FILE = "calibration.json"


def level_key(level: float) -> str:
    return f"{level:g}"


def sorted_residuals(point_N, target_N) -> np.ndarray:
    """|y - ŷ| in increasing order: all split-conformal intervals need from the validation split."""
    return np.sort(np.abs(np.asarray(target_N, np.float64) - np.asarray(point_N, np.float64)))


def conformal_half_width(residuals_sorted, level: float) -> float | None:
    """The ⌈(n + 1)·level⌉-th smallest validation residual; None when that exceeds n (too few rows
    to certify the level). The index is computed exactly, on the level as the decimal it was written
    as (0.68 = 17/25): in floating point 75 × 0.68 = 51.00000000000001, whose ceiling is 52."""
    n = len(residuals_sorted)
    k = math.ceil((n + 1) * Fraction(str(float(level))))
    return float(residuals_sorted[k - 1]) if k <= n else None


def conformal_half_widths(residuals_sorted, levels=LEVELS) -> dict[str, float | None]:
    """Split-conformal half-widths per level from sorted validation residuals (``sorted_residuals``)."""
    return {level_key(level): conformal_half_width(residuals_sorted, level) for level in levels}


def conformal_report(point_N, target_N, half_widths: dict[str, float | None]) -> dict:
    """Coverage of ŷ ± q per level, and the intervals' width (2q); None where q is."""
    err = np.abs(np.asarray(target_N, np.float64) - np.asarray(point_N, np.float64))
    return {"coverage": {k: None if q is None else float(np.mean(err <= q)) for k, q in half_widths.items()},
            "width": {k: None if q is None else 2.0 * q for k, q in half_widths.items()}}


def distribution_report(dist, target_N, levels=LEVELS) -> dict:
    """What a predictive distribution (``scores.Discrete`` or ``scores.Samples``) scores on one split:
    RMSE of its mean, CRPS, central-interval coverage and mean width per level, then the pinball, interval
    and log scores of ``scores.quantile_scores`` (the interval score at the same levels)."""
    target = np.asarray(target_N, np.float64)
    out = {"rmse_mean": metrics.rmse(dist.mean(), target), "crps": dist.crps(target), "coverage": {}, "width": {}}
    for level in levels:
        lo, hi = dist.quantile((1.0 - level) / 2.0), dist.quantile((1.0 + level) / 2.0)
        out["coverage"][level_key(level)] = float(np.mean((lo <= target) & (target <= hi)))
        out["width"][level_key(level)] = float(np.mean(hi - lo))
    return {**out, **scores.quantile_scores(dist, target, interval_levels=levels)}


def best_temperature(crps_by_temperature: dict[float, float]) -> float:
    """The temperature with the lowest validation CRPS (the lower one on a tie)."""
    return min(sorted(crps_by_temperature), key=lambda t: crps_by_temperature[t])


def at_grid_top(temperature: float, temperatures=TEMPERATURES) -> bool:
    """Whether a chosen temperature is the grid's largest: the validation CRPS may still fall beyond it,
    so the calibrated numbers may understate what tempering can do."""
    return temperature >= max(temperatures)


def descend_temperatures(crps_at, start: float = 1.0, temperatures=TEMPERATURES) -> dict[float, float]:
    """{T: validation CRPS} at the grid temperatures a descent visits, for when each costs a decode.

    From the grid point nearest ``start`` it scores both neighbours, moves to the better one if it
    beats the start, and walks on in that direction while the CRPS keeps falling (ties go to the
    lower temperature, as in ``best_temperature``). Where the CRPS is unimodal over the grid,
    ``best_temperature`` of the result is the whole grid's choice: so it was in 83 of 83 fitted
    calibrations of our runs (every ``calibration.json`` under runs/, 2026-12-01, on the grid's first
    10 temperatures), at 4.4 scored temperatures on average instead of 10.
    """
    grid = sorted(temperatures)
    scored: dict[float, float] = {}

    def score(i: int) -> tuple[float, float]:
        if grid[i] not in scored:
            scored[grid[i]] = float(crps_at(grid[i]))
        return scored[grid[i]], grid[i]

    i = min(range(len(grid)), key=lambda k: abs(grid[k] - start))
    score(i)
    neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(grid)]
    step = 0
    for j in neighbours:
        if score(j) < score(i) and (step == 0 or score(j) < score(i + step)):
            step = j - i
    while step and 0 <= i + step < len(grid) and score(i + step) < score(i):
        i += step
    return scored


def summary(calibration: dict) -> dict:
    """The calibration without the validation residuals (for results.json and the suite's rows)."""
    if "conformal" not in calibration:
        return calibration
    return {**calibration, "conformal": {k: v for k, v in calibration["conformal"].items() if k != "residuals_z"}}


def save(out_dir: str, calibration: dict) -> None:
    paths.write(os.path.join(out_dir, FILE), json.dumps(calibration, indent=1))


def load(out_dir: str) -> dict | None:
    path = os.path.join(out_dir, FILE)
    if not paths.exists(path):
        return None
    return json.loads(paths.read_text(path))
