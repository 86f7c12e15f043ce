"""Predicting from a workdir alone: raw features in, original units out, any decoder method."""
import os

import numpy as np
import pytest

from genre_jax.data import read_talent
from genre_jax.errors import GenreError
from genre_jax.predictor import Predictor


def test_checkpoint_alone_reproduces_the_evaluation(tiny_run):
    workdir, _ = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    for method in ("ce", "genre2"):
        predictor = Predictor.from_workdir(workdir, method)
        out = predictor.predict(raw["test"].num, num_samples=4)
        saved = np.load(os.path.join(workdir, "eval", method, "predictions_test.npz"))
        np.testing.assert_allclose(out["greedy"], predictor.preprocessor.z_to_y(saved["greedy_z"]), rtol=1e-6)
        assert out["samples"].shape == (len(raw["test"].num), 4)
    assert Predictor.from_workdir(workdir).params is not None  # the default is the CE model


def test_unknown_absent_or_non_decoder_methods_are_one_line_errors(tiny_run):
    workdir, _ = tiny_run
    for method, needle in (("nope", "unknown method 'nope'"), ("remax", "no best checkpoint; train remax"),
                           ("riemann", "head method")):
        with pytest.raises(GenreError, match=needle) as err:
            Predictor.from_workdir(workdir, method)
        assert "\n" not in str(err.value)
