"""LightGBM reference: fit + evaluate on a toy TALENT folder, the results.json schema and merge."""
import json
import os

import numpy as np
import pytest

from genre_jax import gbdt
from genre_jax.data import load_tabular
from genre_jax.errors import GenreError

pytest.importorskip("lightgbm")

FAST = {"num_boost_round": 60, "early_stopping_rounds": 10}


@pytest.fixture
def toy(toy_data_dir):
    return load_tabular(toy_data_dir, "toy")


def test_fit_evaluate_schema_and_quality(toy):
    model = gbdt.fit_lightgbm(toy, FAST, seed=0)
    entry = gbdt.evaluate_lightgbm(toy, model)
    assert entry["method"] == "lightgbm" and entry["num_samples"] == 1
    assert set(entry["splits"]) == {"val", "test"}
    for scores in entry["splits"].values():
        assert set(scores) == {"mean", "median", "greedy", "distribution"}
        for agg in ("mean", "median", "greedy"):
            assert set(scores[agg]) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
            assert scores[agg] == scores["mean"]  # one point prediction under every aggregation
        assert set(scores["distribution"]) == {"crps", "coverage_90"}
        assert scores["distribution"]["crps"] == pytest.approx(scores["mean"]["mae"])
        assert scores["distribution"]["coverage_90"] == 0.0
        assert scores["mean"]["rmse_original"] == pytest.approx(scores["mean"]["rmse"] * toy.preprocessor.y_std)
    assert entry["splits"]["test"]["mean"]["r2"] > 0.5  # the toy target is a smooth function of x
    assert 1 <= entry["best_iteration"] <= 60
    assert entry["params"]["deterministic"] and entry["params"]["seed"] == 0
    json.dumps(entry)  # results.json must be able to hold it

    # Same data, params and seed: the same trees, so the same numbers.
    again = gbdt.evaluate_lightgbm(toy, gbdt.fit_lightgbm(toy, FAST, seed=0))
    assert again["splits"] == entry["splits"]


def test_predictions_match_the_metrics(toy):
    model = gbdt.fit_lightgbm(toy, FAST, seed=0)
    entry = gbdt.evaluate_lightgbm(toy, model)
    pred = model.predict(toy.splits["test"].x, num_iteration=entry["best_iteration"])
    rmse = float(np.sqrt(np.mean((pred - toy.splits["test"].z.astype(np.float64)) ** 2)))
    assert entry["splits"]["test"]["mean"]["rmse"] == pytest.approx(rmse, rel=1e-9)


def test_run_merges_into_existing_results_and_keeps_other_entries(toy_data_dir, tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    other = {"method": "ce", "num_samples": 8, "splits": {"test": {"mean": {"rmse": 0.5}}}}
    (workdir / "results.json").write_text(json.dumps({"dataset": "toy", "seed": 3, "phases": {"ce": other}}))
    summary = gbdt.run_lightgbm(str(toy_data_dir), "toy", str(workdir), seed=3, params=FAST)
    stored = json.loads((workdir / "results.json").read_text())
    assert set(stored) == {"dataset", "seed", "phases"}
    assert stored["dataset"] == "toy" and stored["seed"] == 3
    assert stored["phases"]["ce"] == other
    assert stored["phases"]["lightgbm"] == json.loads(json.dumps(summary["phases"]["lightgbm"]))
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]

    with pytest.raises(GenreError, match="dataset"):
        gbdt.merge_into_results(str(workdir), "other", 3, {"lightgbm": {}})


def test_run_creates_results_when_absent(toy_data_dir, tmp_path):
    workdir = tmp_path / "fresh"
    gbdt.run_lightgbm(str(toy_data_dir), "toy", str(workdir), seed=0, params=FAST)
    stored = json.loads((workdir / "results.json").read_text())
    assert list(stored["phases"]) == ["lightgbm"] and stored["dataset"] == "toy" and stored["seed"] == 0


def test_cli_and_bad_input(toy_data_dir, tmp_path, capsys):
    assert gbdt.main([f"--data_dir={toy_data_dir}", "--dataset=toy", f"--workdir={tmp_path / 'c'}",
                      f"--params={json.dumps(FAST)}"]) == 0
    assert "test RMSE" in capsys.readouterr().out
    assert gbdt.main([f"--data_dir={toy_data_dir}", "--dataset=nope", f"--workdir={tmp_path / 'd'}"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(GenreError, match="num_boost_round"):
        gbdt.resolve_params({"num_boost_round": 0}, 0)


def test_missing_lightgbm_is_a_clear_error(monkeypatch, toy):
    import builtins
    real_import = builtins.__import__

    def no_lightgbm(name, *args, **kwargs):
        if name == "lightgbm":
            raise ImportError("No module named 'lightgbm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightgbm)
    with pytest.raises(GenreError, match="pip install lightgbm"):
        gbdt.fit_lightgbm(toy)


def test_gbdt_is_a_phase_kind_of_the_pipeline(toy_data_dir, tiny_config, tmp_path):
    """launch.py --config.phases=gbdt,eval writes the entry the command line writes (same data, seed and
    booster), with no checkpoint and no stamp: it is fitted again by every launch that asks for it."""
    from genre_jax import pipeline
    config = tiny_config(phases="gbdt,eval", data_dir=str(toy_data_dir), dataset="toy", seed=3)
    entry = pipeline.run(config, str(tmp_path / "p"), progress=False)["phases"]["lightgbm"]
    cli = gbdt.run_lightgbm(str(toy_data_dir), "toy", str(tmp_path / "c"), seed=3)["phases"]["lightgbm"]
    assert "stamp" not in entry and not (tmp_path / "p" / "gbdt").exists()
    assert entry["splits"] == cli["splits"] and entry["best_iteration"] == cli["best_iteration"]
    assert "lightgbm" in json.loads((tmp_path / "p" / "timings.json").read_text())["phases"]
