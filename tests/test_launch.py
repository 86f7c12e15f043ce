"""End to end: launch on the bundled dataset, resume, restore-and-predict, and the bad-input paths."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import launch
from experiments.configs import tabular
from genre_jax import checkpoint
from genre_jax.errors import GenreError
from genre_jax.predictor import Predictor
from genre_jax.data import read_talent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    config = tabular.get_config("tiny")
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        (config[section] if section else config)[field] = value
    return config


def test_end_to_end_on_bundled_dataset_and_restore(tmp_path):
    workdir = str(tmp_path / "run")
    summary = launch.run(tiny_config(), workdir)
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results == json.loads(json.dumps(summary))
    test = results["phases"]["ce"]["splits"]["test"]
    for agg in ("mean", "median", "greedy"):
        assert set(test[agg]) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
        assert all(np.isfinite(v) for v in test[agg].values())
    assert test["mean"]["r2"] > 0.3  # two tiny epochs already learn cpu_act's structure
    written = json.load(open(os.path.join(workdir, "config.json")))
    assert written["seed"] == 0 and written["versions"]["jax"] == jax.__version__
    assert written["config"]["model"]["d_model"] == 16

    # The checkpoint alone (no config file) reproduces the evaluation's greedy predictions.
    predictor = Predictor.from_workdir(workdir)
    raw, _ = read_talent(None, "cpu_act")
    out = predictor.predict(raw["test"].num, num_samples=4)
    saved = np.load(os.path.join(workdir, "eval", "ce", "predictions_test.npz"))
    np.testing.assert_allclose(out["greedy"], predictor.preprocessor.z_to_y(saved["greedy_z"]), rtol=1e-6)


def _final_params(workdir):
    ckpt = checkpoint.PhaseCheckpoints(workdir, "ce")
    return ckpt.restore("last", _like(workdir))[0].params


def _like(workdir):
    import ml_collections
    from genre_jax import models, train
    from genre_jax.tokenizers import tokenizer_from_spec
    meta = checkpoint.PhaseCheckpoints(workdir, "ce").meta("best")
    tok = tokenizer_from_spec(meta["tokenizer"])
    model = models.make_model(ml_collections.ConfigDict(meta["config"]["model"]), tok)
    params = models.init_params(model, 5, tok.length, jax.random.key(0))
    tx = train.make_optimizer(ml_collections.ConfigDict(meta["config"]["ce"]), 10)
    return train.TrainState(jax.numpy.zeros((), jax.numpy.int32), params, tx.init(params))


def test_interrupted_ce_resumes_to_the_same_parameters(tmp_path, toy_data_dir, monkeypatch):
    config = tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce", **{"ce.max_epochs": 3,
                                                                                   "ce.patience": 5})
    launch.run(config, str(tmp_path / "straight"))

    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "last" and step == 1:
            raise KeyboardInterrupt  # as if the job were killed after epoch 2's checkpoint

    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch.run(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    assert checkpoint.PhaseCheckpoints(str(tmp_path / "resumed"), "ce").meta("last")["epoch"] == 2
    launch.run(config, str(tmp_path / "resumed"))

    a = _final_params(str(tmp_path / "straight"))
    b = _final_params(str(tmp_path / "resumed"))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
    log = [json.loads(l) for l in open(tmp_path / "resumed" / "ce" / "log.jsonl")]
    assert [r["epoch"] for r in log] == [0, 1, 2]


def test_bad_inputs_raise_one_line_errors_and_leave_nothing(tmp_path, toy_data_dir):
    cases = [
        (dict(data_dir=str(toy_data_dir), dataset="nope"), "nope"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", **{"tokenizer.name": "bogus"}), "config.tokenizer.name"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", phases="ce,train"), "config.phases"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", **{"model.name": "resnet"}), "config.model.name"),
    ]
    for i, (overrides, needle) in enumerate(cases):
        workdir = tmp_path / f"w{i}"
        with pytest.raises(GenreError, match=needle) as err:
            launch.run(tiny_config(**overrides), str(workdir))
        assert "\n" not in str(err.value)
        assert not workdir.exists()


def test_workdir_of_a_different_model_is_refused(tmp_path, toy_data_dir):
    workdir = str(tmp_path / "w")
    launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce", **{"ce.max_epochs": 1}), workdir)
    with pytest.raises(GenreError, match="different model"):
        launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", **{"model.d_model": 32}), workdir)


def test_cli_prints_one_line_and_exits_2(tmp_path, toy_data_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GENRE_JAX_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        [f"--config.data_dir={toy_data_dir}", "--config.dataset=missing"],
        ["--config.no_such_key=1"],
        [f"--config.data_dir={toy_data_dir}", "--config.dataset=toy", "--config.model.num_heads=3"],
    ]
    for i, args in enumerate(runs):
        workdir = tmp_path / f"cli{i}"
        proc = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"),
                               f"--config={REPO}/experiments/configs/tabular.py:tiny", f"--workdir={workdir}", *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode != 0, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l]
        assert len(lines) == 1, proc.stderr
        assert not workdir.exists()


def test_settings_are_checked_before_training(tmp_path, toy_data_dir):
    cases = [({"eval.splits": "val,tst"}, "config.eval.splits"), ({"ce.batch_size": 0}, "config.ce.batch_size"),
             ({"model.num_heads": 0}, "config.model.num_heads"),
             ({"phases": "ce,token,eval", "token.method": "ce"}, "config.token.method")]
    for i, (overrides, needle) in enumerate(cases):
        with pytest.raises(GenreError, match=needle):
            launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", **overrides), str(tmp_path / f"w{i}"))
        assert not (tmp_path / f"w{i}").exists()


def test_a_crash_between_best_and_last_saves_can_resume(tmp_path):
    first = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")
    tree = {"w": np.ones(3, np.float32)}
    first.save("best", 0, tree, {"epoch": -1})
    again = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")  # the rerun saves step 0 once more
    again.save("best", 0, {"w": np.zeros(3, np.float32)}, {"epoch": -1})
    np.testing.assert_array_equal(again.restore("best", tree)[0]["w"], 0)
