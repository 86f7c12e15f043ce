import numpy as np

from genre_jax import evaluate, metrics


def test_format_table_lists_every_split_and_aggregation():
    scores = {agg: {"rmse": 0.5, "mae": 0.4, "r2": 0.75, "spearman": 0.9, "rmse_original": 5.0}
              for agg in metrics.AGGREGATIONS}
    table = evaluate.format_table({"ce": {"splits": {"val": scores, "test": scores}}})
    lines = table.splitlines()
    assert len(lines) == 1 + 2 * len(metrics.AGGREGATIONS)
    assert lines[0].split() == ["phase", "split", "agg", "rmse", "mae", "r2", "spearman", "rmse_original"]
    assert lines[-1].split()[:3] == ["ce", "test", "greedy"] and float(lines[-1].split()[5]) == 0.75
    assert np.isclose(float(lines[1].split()[-1]), 5.0)


def test_exact_evaluation_scores_the_enumerated_distribution(tmp_path, make_context, tiny_config):
    import jax

    from genre_jax import exact, models
    from genre_jax.tokenizers import NormalizedTokenizer

    tok = NormalizedTokenizer(2, 4, -2.0, 2.0)  # 16 sequences
    config = tiny_config(**{"eval.decode": "auto", "eval.exact_max_sequences": 16, "eval.num_samples": 5,
                            "eval.batch_size": 16})
    model = models.make_model(config.model, tok)
    params = models.init_params(model, 3, tok.length, jax.random.key(0))
    rng = np.random.default_rng(0)
    arrays = {s: {"x": rng.normal(size=(n, 3)).astype(np.float32), "z": rng.normal(size=n).astype(np.float32)}
              for s, n in (("train", 8), ("val", 20), ("test", 12))}
    ctx = make_context(arrays, config, tokenizer=tok, model=model)
    result = evaluate.evaluate(ctx, params, str(tmp_path / "eval"), "ce")
    assert result["decode"] == "exact"
    saved = np.load(tmp_path / "eval" / "predictions_test.npz")
    assert saved["exact_probs"].shape == (12, 16) and saved["samples_z"].shape == (12, 5)
    probs_NS = np.asarray(exact.predict(model, params, arrays["test"]["x"], tok)[0])
    np.testing.assert_allclose(saved["exact_probs"], probs_NS, atol=1e-6)
    dist = metrics.Discrete(saved["exact_values_z"], probs_NS)
    test = result["splits"]["test"]
    assert np.isclose(test["mean"]["rmse"], metrics.rmse(dist.mean(), arrays["test"]["z"]), rtol=1e-5)
    assert np.isclose(test["distribution"]["crps"], dist.crps(arrays["test"]["z"]), rtol=1e-5)
