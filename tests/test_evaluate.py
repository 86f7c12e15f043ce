import os

import numpy as np
import pytest

from genre_jax import evaluate, metrics, scores


def test_format_table_lists_every_split_and_aggregation():
    scores = {agg: {"rmse": 0.5, "mae": 0.4, "r2": 0.75, "spearman": 0.9, "rmse_original": 5.0}
              for agg in metrics.AGGREGATIONS}
    table = evaluate.format_table({"ce": {"splits": {"val": scores, "test": scores}}})
    lines = table.splitlines()
    assert len(lines) == 1 + 2 * len(metrics.AGGREGATIONS)
    assert lines[0].split() == ["phase", "split", "agg", "rmse", "mae", "r2", "spearman", "rmse_original"]
    assert lines[-1].split()[:3] == ["ce", "test", "greedy"] and float(lines[-1].split()[5]) == 0.75
    assert np.isclose(float(lines[1].split()[-1]), 5.0)

    report = {"coverage": {"0.9": 0.5}, "crps": 0.11}
    cal = {"raw": {"test": report}, "temperature": {"value": 2.0, "splits": {"test": {"coverage": {"0.9": 0.88},
                                                                                          "crps": 0.1}}},
           "conformal": {"splits": {"test": {"coverage": {"0.9": 0.91}}}}}
    table = evaluate.format_table({"genre2": {"splits": {"test": scores}, "calibration": cal}})
    assert table.splitlines()[-1].split() == ["genre2", "raw", "0.50", "/", "0.1100", "T=2", "0.88", "/", "0.1000",
                                              "conformal", "0.91"]


def test_exact_evaluation_scores_the_enumerated_distribution(tmp_path, make_context, tiny_config, monkeypatch):
    import jax

    from genre_jax import exact, models
    from genre_jax.tokenizers import NormalizedTokenizer

    tok = NormalizedTokenizer(2, 4, -2.0, 2.0)  # 16 sequences
    # the evaluation temperature off the calibration grid, and test listed before val
    config = tiny_config(**{"eval.decode": "auto", "eval.exact_max_sequences": 16, "eval.num_samples": 5,
                            "eval.batch_size": 16, "eval.temperature": 0.9, "eval.splits": "test,val"})
    model = models.make_model(config.model, tok)
    params = models.init_params(model, 3, tok.length, jax.random.key(0))
    rng = np.random.default_rng(0)
    arrays = {s: {"x": rng.normal(size=(n, 3)).astype(np.float32), "z": rng.normal(size=n).astype(np.float32)}
              for s, n in (("train", 8), ("val", 20), ("test", 12))}
    ctx = make_context(arrays, config, tokenizer=tok, model=model)
    batches = []  # every (split, temperature) comes from one program, one pass per split
    program = evaluate._probs_at_temperatures_fn(model, tok, ctx.mesh)
    monkeypatch.setattr(evaluate, "_probs_at_temperatures_fn",
                        lambda *a: lambda params, x, temps: batches.append(temps.shape) or program(params, x, temps))
    result = evaluate.evaluate(ctx, params, str(tmp_path / "eval"), "ce")
    assert result["decode"] == "exact"
    assert batches == [(16,)] * 3  # val's 2 batches of 16, then test's 1, at 0.9 and the 15 grid temperatures
    assert list(result["splits"]) == ["test", "val"]
    saved = np.load(tmp_path / "eval" / "predictions_test.npz")
    assert saved["exact_probs"].shape == (12, 16) and saved["samples_z"].shape == (12, 5)
    probs_NS, greedy_N = map(np.asarray, exact.predict(model, params, arrays["test"]["x"], tok, 0.9))
    np.testing.assert_allclose(saved["exact_probs"], probs_NS, atol=1e-6)
    np.testing.assert_array_equal(saved["greedy_z"], greedy_N)
    dist = scores.Discrete(saved["exact_values_z"], probs_NS)
    test = result["splits"]["test"]
    assert np.isclose(test["mean"]["rmse"], metrics.rmse(dist.mean(), arrays["test"]["z"]), rtol=1e-5)
    assert np.isclose(test["distribution"]["crps"], dist.crps(arrays["test"]["z"]), rtol=1e-5)
    # the whole block, pinball / interval / log scores included, is metrics' of the saved distribution
    saved_dist = scores.Discrete(saved["exact_values_z"], saved["exact_probs"])
    assert test["distribution"] == scores.distribution_scores(saved_dist, arrays["test"]["z"])
    assert np.isfinite(test["distribution"]["log_score"])

    # calibration (tiny's eval.calibration = both), fitted on val: every temperature's val CRPS is the
    # CRPS of exact.predict at that temperature, the lowest one is kept, and split-conformal intervals
    # use the ceil((n + 1) level)-th smallest val residual of the exact mean
    from genre_jax import calibration
    cal = result["calibration"]
    val_z, test_z = arrays["val"]["z"], arrays["test"]["z"]
    crps = {}
    for t in (0.5, 1.0, 2.5):
        probs = np.asarray(exact.predict(model, params, arrays["val"]["x"], tok, t)[0])
        crps[t] = scores.Discrete(saved["exact_values_z"], probs).crps(val_z)
        assert np.isclose(cal["temperature"]["val_crps_by_temperature"][f"{t:g}"], crps[t], rtol=1e-5)
    by_t = cal["temperature"]["val_crps_by_temperature"]
    assert cal["temperature"]["value"] == float(min(by_t, key=by_t.get))
    best = cal["temperature"]["value"]
    test_at_best = scores.Discrete(saved["exact_values_z"],
                                    np.asarray(exact.predict(model, params, arrays["test"]["x"], tok, best)[0]))
    assert np.isclose(cal["temperature"]["splits"]["test"]["crps"], test_at_best.crps(test_z), rtol=1e-5)
    val_mean = scores.Discrete(saved["exact_values_z"],
                                np.asarray(exact.predict(model, params, arrays["val"]["x"], tok, 0.9)[0])).mean()
    residuals = np.sort(np.abs(val_z - val_mean))
    assert np.isclose(cal["conformal"]["half_width_z"]["0.8"], residuals[int(np.ceil(21 * 0.8)) - 1], rtol=1e-5)
    assert np.isclose(cal["conformal"]["half_width_z"]["0.95"], residuals[-1], rtol=1e-5)  # ceil(21 * .95) = 20
    half = cal["conformal"]["half_width_z"]["0.8"]
    assert np.isclose(cal["conformal"]["splits"]["test"]["coverage"]["0.8"],
                      np.mean(np.abs(test_z - dist.mean()) <= half))
    assert cal["raw"]["test"]["crps"] == test["distribution"]["crps"]
    saved_cal = calibration.load(str(tmp_path / "eval"))
    assert calibration.summary(saved_cal) == cal and "residuals_z" not in cal["conformal"]
    np.testing.assert_allclose(saved_cal["conformal"]["residuals_z"], residuals, rtol=1e-5, atol=1e-6)

    # test decoded before val (no fit yet): it keeps the evaluation temperature alone, and a grid
    # temperature asked later decodes it again, keeping both
    batches.clear()  # (the evaluation's temperatures: its compiled program again)
    decoder = evaluate.ExactDecoder(ctx, params, (0.9, *calibration.TEMPERATURES))
    decoder("test", 0.9)
    probs_25, _ = decoder("test", 2.5)
    assert batches == [(16,)] * 2 and set(decoder._kept["test"][0]) == {0.9, 2.5}
    np.testing.assert_allclose(probs_25, np.asarray(exact.predict(model, params, arrays["test"]["x"], tok, 2.5)[0]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="temperature 0.6 is not among"):
        decoder("test", 0.6)


def test_predictions_of_a_bucket_workdir_match_local_ones(tmp_path, bucket, make_context):
    rng = np.random.default_rng(0)
    arrays = {s: {"x": rng.normal(size=(n, 3)).astype(np.float32), "z": rng.normal(size=n).astype(np.float32)}
              for s, n in (("train", 8), ("val", 10), ("test", 6))}
    ctx = make_context(arrays)

    def predict_fn(params, x_BF, key, temperature):  # no model to compile: a fixed spread around feature 0
        x = np.asarray(x_BF)
        return x[:, :1] + np.linspace(-1, 1, 4, dtype=np.float32), x[:, 0]

    header = {"method": "ce", "num_samples": 4, "temperature": 1.0}
    decoder = evaluate.sampled_decoder(ctx, predict_fn, None)
    local, _ = evaluate.score_splits(ctx, decoder, str(tmp_path / "eval"), header)
    remote, _ = evaluate.score_splits(ctx, decoder, bucket.URI + "/run/eval/ce", header)
    assert remote["splits"] == local["splits"]
    samples_NG = np.asarray(arrays["test"]["x"][:, :1] + np.linspace(-1, 1, 4, dtype=np.float32), np.float64)
    assert local["splits"]["test"]["distribution"] == scores.distribution_scores(scores.Samples(samples_NG),
                                                                                  arrays["test"]["z"])
    assert local["splits"]["test"]["distribution"]["log_score"] is None  # samples: no density without a KDE
    assert sorted(os.listdir(bucket.root / "run" / "eval" / "ce")) == \
        sorted(f"predictions_{s}.npz" for s in ctx.settings.eval.splits)
    for split in ctx.settings.eval.splits:
        with np.load(bucket.root / "run" / "eval" / "ce" / f"predictions_{split}.npz") as got, \
                np.load(tmp_path / "eval" / f"predictions_{split}.npz") as want:
            assert got.files == want.files and all(np.array_equal(got[k], want[k]) for k in want.files)


def test_sampled_temperature_calibration_decodes_only_what_the_descent_visits(tmp_path, make_context):
    from genre_jax import calibration
    rng = np.random.default_rng(0)
    arrays = {s: {"x": rng.normal(size=(n, 2)).astype(np.float32), "z": None} for s, n in
              (("train", 8), ("val", 40), ("test", 24))}
    for split in arrays:  # targets spread 2.2x wider than the model's samples at T = 1: the best T is above 1
        arrays[split]["z"] = (arrays[split]["x"][:, 0] + 2.2 * 0.5 * arrays[split]["x"][:, 1]).astype(np.float32)
    ctx = make_context(arrays)
    offsets_G = np.linspace(-1, 1, 16, dtype=np.float32)
    decoded = []

    def predict_fn(params, x_BF, key, temperature):  # no model to compile: the spread grows with T
        decoded.append(round(float(temperature), 6))  # float32 on the way in
        x = np.asarray(x_BF)
        return x[:, :1] + float(temperature) * 0.5 * np.abs(x[:, 1:2]) * offsets_G, x[:, 0]

    header = {"method": "ce", "num_samples": 16, "temperature": 1.0}
    decoder = evaluate.sampled_decoder(ctx, predict_fn, None)
    _, dists = evaluate.score_splits(ctx, decoder, str(tmp_path / "eval"), header)
    decoded.clear()
    fitted = evaluate.calibrate(ctx, decoder, dists, None, "temperature")["temperature"]
    every = {}
    for t in calibration.TEMPERATURES:  # the whole grid, decoded independently
        samples = arrays["val"]["x"][:, :1] + t * 0.5 * np.abs(arrays["val"]["x"][:, 1:2]) * offsets_G
        every[t] = scores.crps(samples, arrays["val"]["z"])
    assert fitted["value"] == calibration.best_temperature(every) > 1.0
    assert fitted["at_grid_top"] is False and fitted["grid_top"] == max(calibration.TEMPERATURES)
    scored = {float(t): v for t, v in fitted["val_crps_by_temperature"].items()}
    assert all(np.isclose(v, every[t]) for t, v in scored.items()) and len(scored) < len(every)
    # one val decode per visited temperature but T = 1 (reused from the evaluation), then the test split at T*
    assert sorted(decoded) == sorted([t for t in scored if t != 1.0] + [fitted["value"]])


def test_a_temperature_fit_that_ends_at_the_grids_top_is_flagged(tmp_path, make_context):
    from genre_jax import calibration
    rng = np.random.default_rng(1)
    arrays = {s: {"x": rng.normal(size=(n, 2)).astype(np.float32)} for s, n in (("train", 8), ("val", 40), ("test", 8))}
    for split in arrays:  # targets 100x wider than the samples at T = 1: the CRPS falls over the whole grid
        arrays[split]["z"] = (100 * arrays[split]["x"][:, 1]).astype(np.float32)
    ctx = make_context(arrays)
    offsets_G = np.linspace(-1, 1, 16, dtype=np.float32)

    def predict_fn(params, x_BF, key, temperature):  # samples spread in proportion to T
        x = np.asarray(x_BF)
        return float(temperature) * np.abs(x[:, 1:2]) * offsets_G, x[:, 0] * 0

    header = {"method": "ce", "num_samples": 16, "temperature": 1.0}
    decoder = evaluate.sampled_decoder(ctx, predict_fn, None)
    _, dists = evaluate.score_splits(ctx, decoder, str(tmp_path / "eval"), header)
    fitted = evaluate.calibrate(ctx, decoder, dists, None, "temperature")["temperature"]
    assert fitted["value"] == max(calibration.TEMPERATURES) == fitted["grid_top"] and fitted["at_grid_top"] is True
