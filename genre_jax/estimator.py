"""``GenReRegressor``: the whole pipeline (CE pretraining -> RL fine-tuning -> calibrated evaluation)
behind scikit-learn's estimator API, on in-memory arrays or DataFrames.

    from genre_jax.estimator import GenReRegressor
    model = GenReRegressor(rl_epochs=8).fit(X_train, y_train)
    model.predict(X_test)                       # mean of the predictive distribution
    model.predict_interval(X_test, 0.9)         # split-conformal, fitted on the held-out validation rows
    model.predict_quantiles(X_test, [0.1, 0.9]) # at the validation-calibrated temperature

``fit`` passes the arrays in memory (numeric columns as numbers, other DataFrame columns as
category strings; ``genre_jax.data.from_splits``) to ``pipeline.run`` with the library's recipe
``genre_jax.recipes.get_config(<config>)`` (the one ``experiments/configs/tabular.py:<config>``
names), writes the checkpoints into ``workdir`` (a temporary one by default) and loads the trained
method's ``Predictor``: everything launch.py does (preprocessing fitted on train only, early stopping
and RL selection on the validation rows, checkpoints, calibration) happens the same way, and no data
file is written. A fitted estimator pickles with its checkpoint inside; ``save(path)`` / ``load(path)`` copy the
workdir, which launch.py and ``Predictor.from_workdir`` also read.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import weakref

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from genre_jax import methods, paths
from genre_jax.errors import GenreError

DATASET = "fit"  # the results.json key of a fitted run


def _load_config(variant: str):
    from genre_jax import recipes
    if variant not in recipes.VARIANTS:
        raise ValueError(f"GenReRegressor: config must be one of {', '.join(recipes.VARIANTS)}, got {variant!r}")
    return recipes.get_config(variant)


def _split_columns(X, where: str):
    """(num [n, Fn] float64, cat [n, Fc] object or None, column names or None) from an array or a
    DataFrame (numeric dtypes -> numeric, everything else -> categorical strings)."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame, without importing pandas
        names = [str(c) for c in X.columns]
        numeric = [c for c, t in zip(X.columns, X.dtypes) if getattr(t, "kind", "O") in "biuf"
                   and str(t) != "bool"]
        other = [c for c in X.columns if c not in numeric]
        num = X[numeric].to_numpy(dtype=np.float64, na_value=np.nan) if numeric else np.zeros((len(X), 0))
        cat = X[other].astype(object).to_numpy() if other else None
        _check_finite_or_nan(num, where)
        return num, cat, names, (len(numeric), len(other))
    from sklearn.utils.validation import check_array
    # scikit-learn's own checks and messages for arrays: sparse, complex, empty, 0 features, objects
    # that are not numbers (NaN stays: a missing value, imputed with the train mean)
    try:
        num = check_array(X, dtype=np.float64, ensure_all_finite=False, input_name="X")
    except ValueError as e:
        if "could not convert" in str(e):
            raise ValueError(f"{where}: X has non-numeric values; pass a DataFrame for categorical columns") from None
        if "Complex data" in str(e):  # scikit-learn appends the whole array to this one
            raise ValueError(f"{where}: Complex data not supported (X has complex values); expected real numbers") from None
        raise
    _check_finite_or_nan(num, where)
    return num, None, None, (num.shape[1], 0)


def _check_finite_or_nan(num: np.ndarray, where: str) -> None:
    bad = int(np.isinf(num).sum())
    if bad:
        raise ValueError(f"{where}: X has {bad} infinite values; expected finite numbers (NaN = missing)")


def _check_y(y, n: int, where: str) -> np.ndarray:
    if y is None:  # scikit-learn's wording
        raise ValueError(f"{where}: GenReRegressor requires y to be passed, but the target y is None")
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: y has non-numeric values; expected real-valued targets") from None
    if y.ndim == 2 and y.shape[1] == 1:
        from sklearn.utils.validation import column_or_1d
        y = column_or_1d(y, warn=True)  # a DataConversionWarning, as every scikit-learn regressor gives
    if y.ndim != 1:
        raise ValueError(f"{where}: y has shape {y.shape}; expected a 1-D array of targets")
    if len(y) != n:
        raise ValueError(f"{where}: X has {n} rows but y has {len(y)}")
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise ValueError(f"{where}: y has {bad} NaN or infinite values; expected finite targets")
    return y


class GenReRegressor(RegressorMixin, BaseEstimator):
    """Decoding-based regression with RL fine-tuning (GenRe² by default) as a scikit-learn regressor.

    Parameters
    ----------
    method: "genre2" (default), another RL method ("remax", "grpo", "rloo", "exact_reward"), or "ce"
        (CE pretraining only).
    config: the recipe (``genre_jax/recipes.py``): "quick" (default) | "paper" | "tiny".
    ce_epochs, rl_epochs, learning_rate, rl_learning_rate: budgets and rates (None = the variant's).
    tokenizer_base, tokenizer_digits: the normalized tokenizer (base^digits levels over the training
        targets' range, in z units).
    validation_fraction: rows held out (at random) for early stopping, RL selection and calibration,
        unless ``fit`` gets ``eval_set``.
    num_samples: samples per row for ``predict``'s mean and for quantiles.
    calibration: eval.calibration ("both" | "temperature" | "conformal" | "none").
    overrides: other config fields, e.g. {"model.d_model": 64, "rl.selection": "aggregate_rmse"}.
    workdir: where the run's checkpoints go (None = a temporary folder, ``workdir_``, removed with
        the estimator; ``save`` keeps a copy).
    random_state: the run's seed (and the validation split's).
    verbose: show the progress bars.
    """

    def __init__(self, method="genre2", config="quick", ce_epochs=None, rl_epochs=None, learning_rate=None,
                 rl_learning_rate=None, tokenizer_base=2, tokenizer_digits=8, validation_fraction=0.2,
                 num_samples=128, calibration="both", overrides=None, workdir=None, random_state=0, verbose=False):
        self.method = method
        self.config = config
        self.ce_epochs = ce_epochs
        self.rl_epochs = rl_epochs
        self.learning_rate = learning_rate
        self.rl_learning_rate = rl_learning_rate
        self.tokenizer_base = tokenizer_base
        self.tokenizer_digits = tokenizer_digits
        self.validation_fraction = validation_fraction
        self.num_samples = num_samples
        self.calibration = calibration
        self.overrides = overrides
        self.workdir = workdir
        self.random_state = random_state
        self.verbose = verbose

    # ----- fit

    def _run_config(self):
        spec = methods.get(self.method, field="GenReRegressor method")
        if not spec.decoder:  # the Predictor reads number-decoder checkpoints
            raise ValueError(f"GenReRegressor: method {self.method!r} is a {spec.kind} method; expected a "
                             f"number-decoder method ({', '.join(n for n in methods.NAMES if methods.METHODS[n].decoder)})")
        c = _load_config(self.config)
        c.data_dir, c.dataset, c.seed = "", DATASET, int(self.random_state)  # data_dir unread: the arrays come in memory
        c.phases = ",".join(spec.phases(with_ce=True))
        if spec.phase_kind.selected:
            c[spec.kind].method = self.method
        c.tokenizer.update(name="normalized", base=int(self.tokenizer_base), digits=int(self.tokenizer_digits))
        c.eval.update(splits="val", calibration=self.calibration)
        for field, value in (("ce.max_epochs", self.ce_epochs), ("rl.max_epochs", self.rl_epochs),
                             ("ce.learning_rate", self.learning_rate), ("rl.learning_rate", self.rl_learning_rate),
                             *dict(self.overrides or {}).items()):
            if value is None:
                continue
            section, _, name = field.rpartition(".")
            target = c
            for part in filter(None, section.split(".")):
                if part not in target:
                    raise ValueError(f"GenReRegressor overrides: unknown config field {field!r}")
                target = target[part]
            if name not in target:
                raise ValueError(f"GenReRegressor overrides: unknown config field {field!r}")
            target[name] = value
        return c

    def fit(self, X, y, eval_set=None):
        """Trains CE then the RL method on (X, y); ``eval_set`` = (X_val, y_val) replaces the random
        ``validation_fraction`` hold-out."""
        from genre_jax import pipeline
        from genre_jax.data import RawSplit, from_splits
        from genre_jax.predictor import Predictor

        num, cat, names, kinds = _split_columns(X, "GenReRegressor.fit")
        y = _check_y(y, len(num), "GenReRegressor.fit")
        if eval_set is not None:
            X_val, y_val = eval_set
            v_num, v_cat, v_names, v_kinds = _split_columns(X_val, "GenReRegressor.fit eval_set")
            y_val = _check_y(y_val, len(v_num), "GenReRegressor.fit eval_set")
            if v_kinds != kinds or v_names != names:
                raise ValueError("GenReRegressor.fit: eval_set's columns differ from X's")
            splits = {"train": (num, cat, y), "val": (v_num, v_cat, y_val)}
        else:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(f"GenReRegressor: validation_fraction must be in (0, 1), got "
                                 f"{self.validation_fraction}")
            n_val = int(np.ceil(self.validation_fraction * len(y)))
            if len(y) - n_val < 2 or n_val < 2:
                raise ValueError(f"GenReRegressor.fit: n_samples={len(y)} rows are too few to hold out validation "
                                 f"rows; expected at least 4 (or pass eval_set)")
            order = np.random.default_rng(self.random_state).permutation(len(y))
            val, train = order[:n_val], order[n_val:]
            pick = lambda a, rows: None if a is None else a[rows]  # noqa: E731
            splits = {"train": (num[train], pick(cat, train), y[train]), "val": (num[val], pick(cat, val), y[val])}
        # categories as strings, as a TALENT folder's C_*.npy holds them (the same numbers either way)
        data = from_splits({split: RawSplit(n_, None if c_ is None else c_.astype(str).astype(object), y_)
                            for split, (n_, c_, y_) in splits.items()}, DATASET, {"task_type": "regression"})
        config = self._run_config()  # evaluates the val split only (eval.splits = "val"): there is no test split
        workdir = paths.resolve(self.workdir) if self.workdir else tempfile.mkdtemp(prefix="genre_jax_run_")
        self.results_ = pipeline.run(config, workdir, data=data, progress=bool(self.verbose))["phases"]
        self._own_workdir(None if self.workdir else workdir)
        self.workdir_ = workdir
        self.predictor_ = Predictor.from_workdir(workdir, self.method)
        self.n_features_in_ = num.shape[1] + (0 if cat is None else cat.shape[1])
        self.feature_kinds_ = kinds
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        return self

    def _own_workdir(self, path: str | None) -> None:
        """A temporary workdir (no ``workdir=``) lives as long as the estimator: removed when it is
        garbage-collected or refitted. One the user named is never removed."""
        previous = self.__dict__.pop("_cleanup", None)
        if previous is not None:
            previous()
        if path is not None:
            self._cleanup = weakref.finalize(self, shutil.rmtree, path, True)

    # ----- predict

    def _features(self, X, where: str):
        check_is_fitted(self, "predictor_")
        num, cat, names, kinds = _split_columns(X, where)
        expected = getattr(self, "feature_names_in_", None)
        if expected is not None and names is not None and list(expected) != names:
            unseen = sorted(set(names) - set(expected)) or sorted(set(expected) - set(names))
            raise ValueError(f"{where}: X's columns differ from those seen in fit ({unseen[:5]}); expected "
                             f"{list(expected)[:8]}")
        if sum(kinds) != self.n_features_in_:  # scikit-learn's wording, which its checks look for
            raise ValueError(f"{where}: X has {sum(kinds)} features, but GenReRegressor is expecting "
                             f"{self.n_features_in_} features as input")
        if kinds != self.feature_kinds_:
            raise ValueError(f"{where}: X has {kinds[0]} numeric and {kinds[1]} other columns; fit saw "
                             f"{self.feature_kinds_[0]} and {self.feature_kinds_[1]}")
        return num, cat

    def predict(self, X, output_type: str = "mean", quantiles=None):
        """The prediction ``output_type`` asks for, in the target's units (TabPFN's names):
        ``mean`` (default; the predictive distribution's, exact where the tokenizer has at most 4,096
        sequences, as the default base 2 x 8 digits has, else of ``num_samples`` samples), ``median``,
        ``mode``, ``greedy`` (the greedy decode): arrays [N]; ``quantiles``: a list of [N] arrays, one per
        level of ``quantiles`` (default 0.1, ..., 0.9); ``full``: the whole distribution,
        {"support": [S], "probabilities": [N, S]} where the tokenizer has at most 4,096 sequences, else
        {"samples": [N, num_samples]}; ``main``: a dict of the four point predictions and [N, P] quantiles.
        With IEEE tokens (``overrides={"tokenizer.name": "ieee"}``) prefer the median: a rare sample with
        a large exponent can dominate the mean (measured on boston: test RMSE of the mean 2.7e6 z, of
        the median 0.45; results/claims/README.md, tokenizer study)."""
        from genre_jax import decode
        if output_type not in decode.OUTPUT_TYPES:
            raise ValueError(f"GenReRegressor.predict: output_type must be one of {', '.join(decode.OUTPUT_TYPES)}, "
                             f"got {output_type!r}")
        num, cat = self._features(X, "GenReRegressor.predict")
        levels = decode.DEFAULT_QUANTILES if quantiles is None else quantiles
        try:
            # exact wherever the tokenizer allows, whatever the run's evaluation did: a row's prediction
            # then does not depend on the rows predicted with it (scikit-learn's invariance checks)
            return self.predictor_.predict(num, cat, output_type, levels, num_samples=self.num_samples,
                                           seed=self.random_state, decode_as="auto")
        except GenreError as e:
            raise ValueError(f"GenReRegressor.predict: {e}") from None

    def sample(self, X, n: int = 128):
        """[N, n] samples of the predictive distribution (temperature 1, original units)."""
        num, cat = self._features(X, "GenReRegressor.sample")
        return self.predictor_.sample(num, cat, n, seed=self.random_state)

    def predict_quantiles(self, X, q=(0.05, 0.5, 0.95), calibrated: bool = True):
        """[N, len(q)] quantiles, at the temperature calibrated on the validation rows if ``calibrated``."""
        num, cat = self._features(X, "GenReRegressor.predict_quantiles")
        return self.predictor_.quantiles(num, cat, q, calibrated, self.num_samples, self.random_state)

    def predict_interval(self, X, coverage: float = 0.9, kind: str = "conformal"):
        """(lower, upper) arrays: split-conformal around the mean (default), or the central interval
        of the temperature-calibrated (``temperature``) or raw (``raw``) distribution."""
        num, cat = self._features(X, "GenReRegressor.predict_interval")
        return self.predictor_.interval(num, cat, coverage, kind, self.num_samples, self.random_state)

    # ----- persistence

    def save(self, path: str) -> None:
        """Copies the fitted run's workdir to ``path`` (readable by ``load``, launch.py and the Predictor)."""
        check_is_fitted(self, "predictor_")
        import json
        paths.copytree(self.workdir_, path)  # either side may be a bucket URI
        paths.write(os.path.join(path, "estimator.json"), json.dumps({
            "params": {k: v for k, v in self.get_params().items() if k != "workdir"},
            "n_features_in": self.n_features_in_, "feature_kinds": list(self.feature_kinds_),
            "feature_names_in": None if not hasattr(self, "feature_names_in_") else list(self.feature_names_in_)}))

    @classmethod
    def load(cls, path: str) -> "GenReRegressor":
        import json

        from genre_jax.predictor import Predictor
        paths.check_backend(path)
        try:
            state = json.loads(paths.read_text(os.path.join(path, "estimator.json")))
        except (OSError, json.JSONDecodeError) as e:
            raise GenreError(f"{path}: not a saved GenReRegressor ({e})") from None
        model = cls(**state["params"])
        model.workdir_ = paths.resolve(path)
        model.predictor_ = Predictor.from_workdir(path, model.method)
        model.n_features_in_ = state["n_features_in"]
        model.feature_kinds_ = tuple(state["feature_kinds"])
        if state["feature_names_in"] is not None:
            model.feature_names_in_ = np.asarray(state["feature_names_in"], dtype=object)
        model.results_ = json.loads(paths.read_text(os.path.join(path, "results.json")))["phases"]
        return model

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_cleanup", None)
        if "predictor_" in state:  # the checkpoint travels inside the pickle
            state.pop("predictor_")
            buffer, local = io.BytesIO(), self.workdir_
            if paths.is_remote(local):  # tarfile reads local files: a bucket workdir is copied down first
                local = tempfile.mkdtemp(prefix="genre_jax_pickle_")
                paths.copytree(self.workdir_, local)
            try:
                with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                    tar.add(local, arcname="run")
            finally:
                if local != self.workdir_:
                    shutil.rmtree(local, ignore_errors=True)
            state["_workdir_tar"] = buffer.getvalue()
        return state

    def __setstate__(self, state):
        blob = state.pop("_workdir_tar", None)
        self.__dict__.update(state)
        if blob is not None:
            from genre_jax.predictor import Predictor
            root = tempfile.mkdtemp(prefix="genre_jax_unpickled_")
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                tar.extractall(root, filter="data")
            self.workdir_ = os.path.join(root, "run")
            self._own_workdir(root)
            self.predictor_ = Predictor.from_workdir(self.workdir_, self.method)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing numeric features are imputed with the train mean
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags
