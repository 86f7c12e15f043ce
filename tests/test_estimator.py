"""GenReRegressor: one tiny fit (inside a scikit-learn Pipeline, on a DataFrame with a categorical
column) serves every check; bad inputs are one-line ValueErrors before anything trains."""
import gc
import os
import pickle

import numpy as np
import scipy.sparse
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from genre_jax.estimator import GenReRegressor
from genre_jax.predictor import Predictor


def _frame(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = 2.0 * a - b + np.where(colour == "red", 1.5, 0.0) + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "colour": colour}), y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    X, y = _frame(240, 0)
    model = GenReRegressor(config="tiny", ce_epochs=4, rl_epochs=1, workdir=str(tmp_path_factory.mktemp("run")))
    pipe = make_pipeline(FunctionTransformer(validate=False), model).fit(X, y)  # the DataFrame passes through
    return pipe, pipe[-1]


def test_fit_predict_quantiles_intervals_inside_a_pipeline(fitted):
    pipe, model = fitted
    X, y = _frame(60, 1)
    pred = pipe.predict(X)
    assert pred.shape == (60,) and np.isfinite(pred).all()
    assert list(model.feature_names_in_) == ["a", "b", "colour"] and model.n_features_in_ == 3
    assert model.feature_kinds_ == (2, 1)
    q = model.predict_quantiles(X, [0.1, 0.5, 0.9])
    assert q.shape == (60, 3) and (np.diff(q, axis=1) >= 0).all()
    lo, hi = model.predict_interval(X, 0.8)
    half = model.predictor_.conformal_half_width(0.8) * model.predictor_.preprocessor.y_std
    np.testing.assert_allclose(hi - lo, 2 * half, rtol=1e-6)  # conformal: a constant width around the mean
    assert model.sample(X, 5).shape == (60, 5)
    full = model.predict(X, output_type="full")  # base 2 x 8 digits: the exact distribution
    assert full["probabilities"].shape == (60, len(full["support"]))
    low, high = model.predict(X, output_type="quantiles", quantiles=[0.1, 0.9])
    assert low.shape == (60,) and (low <= high).all()
    assert np.isfinite(pipe.score(X, y))
    assert set(model.results_) == {"ce", "genre2"} and "calibration" in model.results_["genre2"]


def test_clone_pickle_save_load_and_the_predictor_read_the_same_model(fitted, tmp_path):
    _, model = fitted
    X, _ = _frame(30, 2)
    fresh = clone(model)
    assert fresh.get_params() == model.get_params() and not hasattr(fresh, "predictor_")
    expected = model.predict(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), expected)
    unpacked = os.path.dirname(restored.workdir_)
    del restored
    gc.collect()
    assert not os.path.exists(unpacked)  # the estimator's own temporary folder goes with it
    model.save(str(tmp_path / "saved"))
    np.testing.assert_array_equal(GenReRegressor.load(str(tmp_path / "saved")).predict(X), expected)
    predictor = Predictor.from_workdir(str(tmp_path / "saved"))  # the method trained last: genre2
    assert predictor.method == "genre2"


def test_bad_inputs_are_one_line_value_errors(fitted):
    _, model = fitted
    X, y = _frame(20, 3)
    cases = [
        (lambda: GenReRegressor().fit(X, np.r_[y[:-1], np.nan]), "y has 1 NaN or infinite values"),
        (lambda: GenReRegressor().fit(X, y[:-2]), "X has 20 rows but y has 18"),
        (lambda: GenReRegressor().fit(np.c_[np.ones(20), np.full(20, np.inf)], y), "X has 20 infinite values"),
        (lambda: GenReRegressor(method="riemann").fit(X.to_numpy()[:, :2], y), "method 'riemann' is a head"),
        (lambda: GenReRegressor(method="nope").fit(X.to_numpy()[:, :2], y), "unknown method 'nope'"),
        (lambda: GenReRegressor(overrides={"model.width": 3}).fit(X.to_numpy()[:, :2], y),
         "unknown config field 'model.width'"),
        (lambda: model.predict(X.rename(columns={"b": "beta"})), r"columns differ from those seen in fit \(\['beta'\]"),
        (lambda: model.predict(X, output_type="modal"), "output_type must be one of mean, median, mode"),
        # scikit-learn's wording, which its estimator checks look for
        (lambda: model.predict(X.to_numpy()[:, :2].astype(float)), "X has 2 features, but GenReRegressor is expecting 3"),
        (lambda: GenReRegressor().fit(np.ones((20, 2)) + 0j, y), "Complex data not supported"),
        (lambda: GenReRegressor().fit(np.empty((20, 0)), y), r"0 feature\(s\) \(shape=\(20, 0\)\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        GenReRegressor().fit(scipy.sparse.csr_array(np.ones((20, 2))), y)
