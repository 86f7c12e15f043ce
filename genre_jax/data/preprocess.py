"""Train-only preprocessing of tabular data: the fitted feature and target transforms.

Preprocessing (every statistic is fitted on the train split only, so val/test never leak):

* numeric: NaN -> train column mean (0 for a column with no observed train value), then
  standardize with the train mean/std of the imputed column.
* categorical: missing values (None, NaN, '', 'nan', 'None', any case) become the category
  ``"__missing__"``; values are ordinal-encoded by the sorted train categories; a category not
  seen in train maps to the train mode's code. The codes are then standardized like numeric
  columns, which keeps the MLP input scale uniform across column kinds.
* x = [numeric, categorical] as float32.
* target: z = (y - mean_train) / std_train, statistics in float64, z stored as float32.

A std that is zero, non-finite, or comes from a constant train column is replaced by 1 so a
constant feature maps to 0 instead of dividing by (almost) zero; a constant target is an error.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from genre_jax.errors import one_line_error as _error

MISSING_CATEGORY = "__missing__"

_MISSING_SPELLINGS = frozenset({"", "nan", "none"})


@dataclasses.dataclass(frozen=True)
class RawSplit:
    """One split as read from disk, before any preprocessing."""

    num: np.ndarray  # float64 [n, n_num]; n_num may be 0
    cat: np.ndarray | None  # object [n, n_cat], or None when the dataset has no C files
    y: np.ndarray  # float64 [n]

    @property
    def num_rows(self) -> int:
        return int(self.y.shape[0])



def _category_string(value: Any) -> str:
    if value is None:
        return MISSING_CATEGORY
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return MISSING_CATEGORY
        # An integral float and the same int are one category (3.0 vs 3 across files).
        if float(value).is_integer():
            value = int(value)
    text = str(value)
    if text.strip().lower() in _MISSING_SPELLINGS:
        return MISSING_CATEGORY
    return text


def _category_strings(cat: np.ndarray | None, n_rows: int) -> np.ndarray:
    """[n, n_cat] str array with missing spelled MISSING_CATEGORY; [n, 0] when cat is None."""
    if cat is None or cat.shape[1] == 0:
        return np.zeros((n_rows, 0), dtype=str)
    flat = [_category_string(v) for v in cat.ravel()]
    return np.array(flat, dtype=str).reshape(cat.shape)


def _fit_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (mean, std) of a float [n, k] array with NaN = missing, imputation included."""
    observed = ~np.isnan(values)
    count = observed.sum(axis=0)
    lo = np.where(observed, values, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(observed, values, -np.inf).max(axis=0, initial=-np.inf)
    # Columns whose sum or variance would overflow (values near 1e300) get the statistics of
    # values / max|value|, scaled back; the others the plain ones, bit for bit as before.
    scale = np.maximum(np.abs(lo), np.abs(hi))  # inf for a column with no observed value
    scale = np.where(np.isfinite(scale) & (scale > 1e150), scale, 1.0)
    unit = np.where(observed, values, 0.0) / scale
    mean_unit = np.where(count > 0, unit.sum(axis=0) / np.maximum(count, 1), 0.0)
    mean = mean_unit * scale
    std = np.where(observed, unit, mean_unit).std(axis=0) * scale
    # A constant column's std can be a rounding residue (~1e-17), not 0; test constancy exactly.
    degenerate = ~(hi > lo) | ~np.isfinite(std) | (std == 0)
    return mean, np.where(degenerate, 1.0, std)


def _encode(strings: np.ndarray, categories: tuple[str, ...], mode: int) -> np.ndarray:
    cats = np.array(categories, dtype=str)
    pos = np.minimum(np.searchsorted(cats, strings), len(cats) - 1)
    return np.where(cats[pos] == strings, pos, mode)


def _encode_all(strings: np.ndarray, categories, modes) -> np.ndarray:
    cols = [_encode(strings[:, j], categories[j], modes[j]) for j in range(strings.shape[1])]
    return np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((strings.shape[0], 0))


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _check_raw(split: RawSplit, where: str) -> None:
    num, cat, y = split.num, split.cat, split.y
    if not isinstance(num, np.ndarray) or num.ndim != 2:
        raise _error(f"{where}.num has shape {np.shape(num)}; expected a 2-D array [rows, n_num]")
    if cat is not None and (not isinstance(cat, np.ndarray) or cat.ndim != 2):
        raise _error(f"{where}.cat has shape {np.shape(cat)}; expected None or a 2-D array")
    if np.ndim(y) != 1:
        raise _error(f"{where}.y has shape {np.shape(y)}; expected a 1-D array [rows]")
    for field, arr in (("num", num), ("cat", cat)):
        if arr is not None and arr.shape[0] != len(y):
            raise _error(f"{where}.{field} has {arr.shape[0]} rows but {where}.y has {len(y)}")
    try:
        values = np.asarray(num, np.float64)
    except (TypeError, ValueError):
        raise _error(f"{where}.num has non-numeric values; expected float features") from None
    if np.isinf(values).any():
        raise _error(f"{where}.num has infinite values; expected finite numbers or NaN for missing")


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Train-fitted feature and target transforms (see the module docstring for the protocol).

    Categorical columns are ordinal codes standardized with their train mean/std, like numeric
    columns: this keeps every MLP input on the same scale without one-hot widening.
    """

    num_mean: tuple[float, ...]
    num_std: tuple[float, ...]
    cat_categories: tuple[tuple[str, ...], ...]
    cat_mode: tuple[int, ...]
    cat_mean: tuple[float, ...]
    cat_std: tuple[float, ...]
    y_mean: float
    y_std: float

    @classmethod
    def fit(cls, train: RawSplit) -> "Preprocessor":
        _check_raw(train, "train")
        n = len(train.y)
        if n < 2:
            raise _error(f"train split has {n} rows; expected at least 2 to fit the preprocessing")
        num_mean, num_std = _fit_scale(np.asarray(train.num, np.float64))
        strings = _category_strings(train.cat, n)
        categories, modes = [], []
        for j in range(strings.shape[1]):
            uniq, counts = np.unique(strings[:, j], return_counts=True)
            categories.append(tuple(str(c) for c in uniq))
            modes.append(int(np.argmax(counts)))  # ties -> first in sorted order, deterministic
        cat_mean, cat_std = _fit_scale(_encode_all(strings, categories, modes))
        y_mean, y_std = _fit_target(np.asarray(train.y, np.float64))
        return cls(
            num_mean=_floats(num_mean), num_std=_floats(num_std),
            cat_categories=tuple(categories), cat_mode=tuple(modes),
            cat_mean=_floats(cat_mean), cat_std=_floats(cat_std),
            y_mean=y_mean, y_std=y_std,
        )

    @property
    def num_features(self) -> int:
        return len(self.num_mean) + len(self.cat_mean)

    def transform_x(self, split: RawSplit, where: str = "split") -> np.ndarray:
        """float32 [n, num_features]: standardized numeric columns, then categorical ones."""
        _check_raw(split, where)
        num = np.asarray(split.num, np.float64)
        n_cat = 0 if split.cat is None else split.cat.shape[1]
        if num.shape[1] != len(self.num_mean) or n_cat != len(self.cat_mean):
            raise _error(f"split has {num.shape[1]} numeric and {n_cat} categorical columns; the "
                         f"preprocessor was fitted on {len(self.num_mean)} and {len(self.cat_mean)}")
        mean, std = np.array(self.num_mean), np.array(self.num_std)
        num_z = (np.where(np.isnan(num), mean, num) - mean) / std
        codes = _encode_all(_category_strings(split.cat, num.shape[0]), self.cat_categories, self.cat_mode)
        cat_z = (codes - np.array(self.cat_mean)) / np.array(self.cat_std)
        x = np.concatenate([num_z, cat_z], axis=1)
        _check_float32(x, f"{where}: numeric feature", "the train split's mean and std")
        return x.astype(np.float32)

    def y_to_z(self, y, where: str = "target") -> np.ndarray:
        z = (np.asarray(y, np.float64) - self.y_mean) / self.y_std
        _check_float32(z[:, None], where, "the train target's mean and std")
        return z.astype(np.float32)

    def z_to_y(self, z) -> np.ndarray:
        return np.asarray(z, np.float64) * self.y_std + self.y_mean

    def to_dict(self) -> dict:
        """JSON-serializable dict (lists, floats, ints, str); inverse of from_dict."""
        return {
            "num_mean": list(self.num_mean), "num_std": list(self.num_std),
            "cat_categories": [list(c) for c in self.cat_categories],
            "cat_mode": list(self.cat_mode),
            "cat_mean": list(self.cat_mean), "cat_std": list(self.cat_std),
            "y_mean": self.y_mean, "y_std": self.y_std,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        if not isinstance(d, dict):
            raise _error(f"preprocessor state is a {type(d).__name__}; expected a dict from to_dict()")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d]
        if missing:
            raise _error(f"preprocessor state lacks field(s) {', '.join(missing)}; expected to_dict() output")
        try:
            pre = cls(
                num_mean=_floats(d["num_mean"]), num_std=_floats(d["num_std"]),
                cat_categories=tuple(tuple(str(c) for c in cats) for cats in d["cat_categories"]),
                cat_mode=tuple(int(m) for m in d["cat_mode"]),
                cat_mean=_floats(d["cat_mean"]), cat_std=_floats(d["cat_std"]),
                y_mean=float(d["y_mean"]), y_std=float(d["y_std"]),
            )
        except (TypeError, ValueError) as exc:
            raise _error(f"preprocessor state has a malformed field ({exc}); expected to_dict() output") from None
        _check_state(pre)
        return pre


def _fit_target(y: np.ndarray) -> tuple[float, float]:
    n_bad = int((~np.isfinite(y)).sum())
    if n_bad:
        raise _error(f"train target y has {n_bad} non-finite values; expected all finite")
    # Exact constancy check: np.std of a constant column can be a rounding residue, not 0.
    if y.max() == y.min():
        raise _error(f"train target y is constant ({float(y[0])!r}); expected a target with non-zero spread")
    _warn_far_values(y, "train target y")
    # as _fit_scale: y / max|y| where the plain sum or variance would overflow
    scale = max(float(np.abs(y).max()), 1.0) if np.abs(y).max() > 1e150 else 1.0
    unit = y / scale
    return float(unit.mean() * scale), float(unit.std() * scale)


FAR_MADS = 1e6  # a value this many median absolute deviations from the median is almost surely a sentinel


def _warn_far_values(values: np.ndarray, where: str) -> None:
    """One warning line for values so far from the bulk that they would set the standardization alone
    (sentinels such as 1e300 or -999999 among ordinary values)."""
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    if not np.isfinite(mad) or mad == 0:
        return
    far = np.abs(values - median) > FAR_MADS * mad
    if far.any():
        print(f"warning: {where} has {int(far.sum())} value(s) more than {FAR_MADS:.0e} median absolute deviations "
              f"from the median (the largest |value| is {float(np.abs(values).max()):.3g}); they set the "
              f"standardization alone: check them for sentinel or corrupt values", file=sys.stderr)


def _check_float32(values_NF: np.ndarray, where: str, scaled_by: str) -> None:
    """Standardized values must fit float32, the dtype the model reads."""
    bad = ~(np.abs(values_NF) <= np.finfo(np.float32).max)
    if bad.any():
        column = int(np.argwhere(bad)[0][1])
        raise _error(f"{where} column {column} has values outside float32 range after standardizing with "
                     f"{scaled_by} (the largest |z| is {float(np.abs(values_NF).max()):.3g}); expected values "
                     f"on a scale like the train split's")


def _check_state(pre: Preprocessor) -> None:
    if len(pre.num_mean) != len(pre.num_std):
        raise _error("preprocessor field num_std has a different length from num_mean")
    n_cat = len(pre.cat_categories)
    for field in ("cat_mode", "cat_mean", "cat_std"):
        if len(getattr(pre, field)) != n_cat:
            raise _error(f"preprocessor field {field} has {len(getattr(pre, field))} entries; "
                         f"expected {n_cat} (one per categorical column)")
    for j, (cats, mode) in enumerate(zip(pre.cat_categories, pre.cat_mode)):
        if not cats or not 0 <= mode < len(cats) or list(cats) != sorted(cats):
            raise _error(f"preprocessor field cat_categories[{j}]/cat_mode[{j}] is invalid; expected "
                         f"sorted non-empty categories and a mode index into them")
    stats = pre.num_mean + pre.num_std + pre.cat_mean + pre.cat_std + (pre.y_mean, pre.y_std)
    if not all(np.isfinite(stats)) or pre.y_std <= 0 or min(pre.num_std + pre.cat_std, default=1) <= 0:
        raise _error("preprocessor state has a non-finite mean or a non-positive std; expected fitted statistics")
