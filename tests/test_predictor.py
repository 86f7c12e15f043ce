"""Predicting from a workdir alone: raw features in, original units out, any decoder method."""
import os

import numpy as np
import pytest

from genre_jax import decode, evaluate
from genre_jax.data import read_talent
from genre_jax.errors import GenreError
from genre_jax.predictor import Predictor


def test_checkpoint_alone_reproduces_the_evaluation(tiny_run):
    workdir, summary = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    for method in ("ce", "genre2"):
        predictor = Predictor.from_workdir(workdir, method)
        # the tiny recipe's evaluation samples 8 draws: the Predictor decodes the same way, and with the
        # test split's key (eval.splits = val,test) draws the very samples evaluation saved
        assert predictor.decoding() == decode.Decoding("sample", 8, 1.0)
        dist, greedy_z = predictor.distribution(raw["test"].num, key=evaluate.split_key(summary["seed"], 1))
        saved = np.load(os.path.join(workdir, "eval", method, "predictions_test.npz"))
        np.testing.assert_array_equal(greedy_z, saved["greedy_z"])
        np.testing.assert_array_equal(dist.samples_NG.astype(np.float32), saved["samples_z"])
    assert Predictor.from_workdir(workdir).method == "genre2"  # the default: the method trained last


def test_conformal_intervals_centre_on_the_predictor_their_residuals_were_measured_on(tiny_run):
    workdir, summary = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    predictor = Predictor.from_workdir(workdir, "genre2")
    decoding = predictor.conformal_decoding()
    assert decoding == decode.Decoding("sample", 8, 1.0)  # recorded by evaluation, which sampled
    # the stored validation residuals are this predictor's (rounded to 6 decimals when stored)
    dist, _ = predictor.distribution(raw["val"].num, decoding=decoding, key=evaluate.split_key(summary["seed"], 0))
    residuals = np.sort(np.abs(predictor.preprocessor.y_to_z(raw["val"].y) - dist.mean()))
    np.testing.assert_allclose(residuals, predictor.calibration["conformal"]["residuals_z"], rtol=0, atol=5e-7 + 1e-12)
    # and the interval is centred on it, not on the exact mean (the 8-sample mean differs from it)
    x = raw["test"].num[:40]
    lower, upper = predictor.interval(x, coverage=0.8, seed=3)
    centre = predictor.preprocessor.z_to_y(predictor.distribution(x, decoding=decoding, seed=3)[0].mean())
    np.testing.assert_allclose((lower + upper) / 2, centre, rtol=1e-12)
    assert np.abs(centre - predictor.predict(x, output_type="mean", decode_as="exact")).max() > 1e-3 * predictor.preprocessor.y_std


def test_full_is_the_exact_distribution_and_the_point_outputs_follow_from_it(tiny_run):
    workdir, _ = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    predictor = Predictor.from_workdir(workdir, "genre2")
    x = raw["test"].num[:24]
    full = predictor.predict(x, output_type="full")  # 256 sequences: exact, although this run's evaluation sampled
    support, probs = full["support"], full["probabilities"]
    assert probs.shape == (24, len(support)) and np.all(np.diff(support) > 0) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=0, atol=1e-12)
    # the point outputs of the same exact decoding, against NumPy on the returned distribution
    exact_out = predictor.predict(x, output_type="main", quantiles=(0.25, 0.5), decode_as="exact")
    scale = np.abs(support).max()
    np.testing.assert_allclose(exact_out["mean"], probs @ support, rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(exact_out["mode"], support[np.argmax(probs, 1)])
    cdf = np.cumsum(probs, 1)
    np.testing.assert_array_equal(exact_out["quantiles"][:, 1], exact_out["median"])
    np.testing.assert_array_equal(exact_out["quantiles"][:, 0], support[np.argmax(cdf >= 0.25 - 1e-12, 1)])
    with pytest.raises(GenreError, match=r"^Predictor.predict: output_type must be one of \['mean'"):
        predictor.predict(x, output_type="modal")


def test_cli_writes_predictions_quantiles_and_intervals(tiny_run, tmp_path, capsys):
    from genre_jax import predict
    workdir, _ = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    np.save(tmp_path / "x.npy", raw["test"].num[:50])
    out = tmp_path / "preds.csv"
    assert predict.main([f"--workdir={workdir}", f"--input={tmp_path / 'x.npy'}", f"--out={out}", "--num_samples=8",
                         "--quantiles=0.1,0.9", "--interval=0.8"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "mean,median,mode,greedy,q0.1,q0.9,lower,upper" and len(lines) == 51
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    predictor = Predictor.from_workdir(workdir)
    np.testing.assert_allclose(values[:, 3], predictor.predict(raw["test"].num[:50], output_type="greedy"), rtol=1e-9)  # %.10g
    assert (values[:, 4] <= values[:, 5]).all() and (values[:, 6] < values[:, 7]).all()
    assert capsys.readouterr().err.strip() == f"wrote 50 rows to {out}"

    np.save(tmp_path / "bad.npy", raw["test"].num[:5, :3])
    assert predict.main([f"--workdir={workdir}", f"--input={tmp_path / 'bad.npy'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: split has 3 numeric and 0 categorical columns") and "\n" not in err


def test_unknown_absent_or_non_decoder_methods_are_one_line_errors(tiny_run):
    workdir, _ = tiny_run
    for method, needle in (("nope", "unknown method 'nope'"), ("remax", "no best checkpoint; train remax"),
                           ("riemann", "head method")):
        with pytest.raises(GenreError, match=needle) as err:
            Predictor.from_workdir(workdir, method)
        assert "\n" not in str(err.value)



def test_the_method_trained_last_in_a_bucket_workdir(bucket, monkeypatch):
    from genre_jax import methods, paths
    from genre_jax.predictor import trained_methods

    # a bucket folder has no time of its own: the order comes from each last/checksums.json
    for age, name in enumerate(("genre2", "ce")):
        last = bucket.root / "run" / methods.METHODS[name].folder / "last"
        (last.parent / "best").mkdir(parents=True)
        last.mkdir()
        (last / "checksums.json").write_text("{}")
        os.utime(last / "checksums.json", (1000 + age, 1000 + age))
        os.utime(last, (5000 - age, 5000 - age))  # the folder's own time, which a bucket lacks: not used
    assert trained_methods(bucket.URI + "/run") == ["genre2", "ce"]
    monkeypatch.setattr(paths, "_importable", lambda module: False)
    with pytest.raises(GenreError, match=r"^gs://bucket/run: gs:// paths need gcsfs"):
        Predictor.from_workdir(bucket.URI + "/run")
    monkeypatch.setattr(paths, "_importable", lambda module: True)
    with pytest.raises(GenreError, match=r"^gs://bucket/run/rl/remax: no best checkpoint"):
        Predictor.from_workdir(bucket.URI + "/run", "remax")
