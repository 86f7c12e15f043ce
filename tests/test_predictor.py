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
    assert Predictor.from_workdir(workdir).method == "genre2"  # the default: the method trained last


def test_cli_writes_predictions_quantiles_and_intervals(tiny_run, tmp_path, capsys):
    from genre_jax import predict
    workdir, _ = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    np.save(tmp_path / "x.npy", raw["test"].num[:50])
    out = tmp_path / "preds.csv"
    assert predict.main([f"--workdir={workdir}", f"--input={tmp_path / 'x.npy'}", f"--out={out}", "--num_samples=8",
                         "--quantiles=0.1,0.9", "--interval=0.8"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "mean,median,greedy,q0.1,q0.9,lower,upper" and len(lines) == 51
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    predictor = Predictor.from_workdir(workdir)
    np.testing.assert_allclose(values[:, 2], predictor.predict(raw["test"].num[:50], num_samples=8)["greedy"],
                               rtol=1e-6)
    assert (values[:, 3] <= values[:, 4]).all() and (values[:, 5] < values[:, 6]).all()
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
