import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from ml_collections import ConfigDict

from genre_jax import heads, metrics, parallel
from genre_jax.errors import GenreError

MODEL_CFG = ConfigDict(dict(d_model=16, mlp_hidden=32, mlp_layers=1, dropout=0.0))


def reference_targets(z_B, edges_E, smoothing):
    """float64 SciPy reference: the normal CDF over [-inf, edges..., inf]."""
    sigma = smoothing * (edges_E[1] - edges_E[0])
    bounds = np.concatenate([[-np.inf], np.asarray(edges_E, np.float64), [np.inf]])
    cdf_BK1 = scipy.stats.norm.cdf((bounds[None, :] - np.asarray(z_B, np.float64)[:, None]) / sigma)
    return np.diff(cdf_BK1, axis=1)


def head_cfg(**overrides):
    return ConfigDict(dict(dict(method="riemann", num_bins=16, low=-3.0, high=3.0, smoothing=1.0), **overrides))


def test_riemann_targets_sum_to_one_and_match_the_normal_cdf():
    z_B = np.array([-5.0, -3.0, -2.95, -0.1, 0.0, 1.37, 2.99, 3.0, 8.0], np.float32)
    for num_bins, smoothing in ((16, 1.0), (256, 1.0), (256, 2.5)):
        edges_E = heads.riemann_edges(num_bins)
        targets_BK = np.asarray(heads.riemann_targets(z_B, edges_E, smoothing))
        assert targets_BK.shape == (len(z_B), num_bins + 2)
        np.testing.assert_allclose(targets_BK.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(targets_BK, reference_targets(z_B, edges_E, smoothing), atol=1e-5)
    # far in a tail: all mass in the tail bin; at a boundary: half in the tail
    targets_BK = np.asarray(heads.riemann_targets(z_B, heads.riemann_edges(16), 1.0))
    assert targets_BK[0, 0] > 0.999 and targets_BK[-1, -1] > 0.999
    np.testing.assert_allclose([targets_BK[1, 0], targets_BK[7, -1]], 0.5, atol=1e-6)


def test_zero_smoothing_gives_one_hot_labels_in_the_containing_bin():
    edges_E = heads.riemann_edges(6, -3.0, 3.0)  # bins of width 1
    z_B = np.array([-4.0, -3.0, -0.5, 0.0, 2.9, 3.0, 7.0], np.float32)
    targets_BK = np.asarray(heads.riemann_targets(z_B, edges_E, 0.0))
    np.testing.assert_array_equal(targets_BK.argmax(1), [0, 1, 3, 4, 6, 7, 7])
    np.testing.assert_array_equal(targets_BK.sum(1), 1.0)


def test_bin_values_use_train_tail_means_with_a_fallback():
    edges_E = heads.riemann_edges(6, -3.0, 3.0)
    values_K = heads.riemann_bin_values(edges_E, np.array([-5.0, -4.0, 0.0, 3.0, 5.0]))
    np.testing.assert_allclose(values_K, [-4.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 4.0])
    np.testing.assert_allclose(heads.riemann_bin_values(edges_E, np.zeros(3))[[0, -1]], [-3.5, 3.5])
    with pytest.raises(GenreError, match="config.head.low/high"):
        heads.riemann_edges(8, 1.0, 1.0)


def tiny_batch(num_features=3, seed=0):
    rng = np.random.default_rng(seed)
    z_B = np.array([-4.0, -0.3, 1.1, 2.0, 100.0, 100.0], np.float32)  # last two rows are padding
    weight_B = np.array([1, 1, 1, 1, 0, 0], np.float32)
    return {"x": rng.normal(size=(6, num_features)).astype(np.float32), "z": z_B, "weight": weight_B}


def init(model, num_features=3, seed=0):
    return model.init({"params": jax.random.key(seed)}, jnp.zeros((1, num_features)), train=False)["params"]


def test_losses_match_numpy_and_ignore_padding_rows():
    batch = tiny_batch()
    real = batch["weight"] > 0
    cfg = head_cfg(smoothing=1.5)

    model = heads.make_head_model(MODEL_CFG, "riemann", cfg.num_bins)
    params = init(model)
    logits_BK = np.asarray(model.apply({"params": params}, batch["x"]), np.float64)
    total, count = heads.make_head_loss("riemann", model, cfg)(params, batch, None, False)
    targets_BK = reference_targets(batch["z"], heads.riemann_edges(16), 1.5)
    ce_B = -np.sum(targets_BK * scipy.special.log_softmax(logits_BK, axis=1), axis=1)
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), ce_B[real].sum(), rtol=1e-5)

    model = heads.make_head_model(MODEL_CFG, "pointwise", cfg.num_bins)
    params = init(model)
    pred_B = np.asarray(model.apply({"params": params}, batch["x"]), np.float64)[:, 0]
    total, count = heads.make_head_loss("pointwise", model, cfg)(params, batch, None, False)
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), np.sum((pred_B - batch["z"])[real] ** 2), rtol=1e-5)


def test_dropout_only_in_training_mode():
    model = heads.make_head_model(ConfigDict(dict(MODEL_CFG, dropout=0.5)), "pointwise", 16)
    params, batch = init(model), tiny_batch()
    loss_fn = heads.make_head_loss("pointwise", model, head_cfg())
    eval_loss = loss_fn(params, batch, None, False)[0]
    assert float(eval_loss) == float(loss_fn(params, batch, None, False)[0])
    train_losses = {float(loss_fn(params, batch, jax.random.key(k), True)[0]) for k in range(3)}
    assert len(train_losses) == 3


def test_expected_value_prediction_matches_numpy():
    model = heads.make_head_model(MODEL_CFG, "riemann", 16)
    params, x_BF = init(model), tiny_batch()["x"]
    edges_E = heads.riemann_edges(16)
    values_K = heads.riemann_bin_values(edges_E, np.array([-4.0, 5.0]))
    samples_BS, point_B = heads.head_predict("riemann", model, params, x_BF, jax.random.key(0), 4, values_K, edges_E)
    logits_BK = np.asarray(model.apply({"params": params}, x_BF), np.float64)
    np.testing.assert_allclose(point_B, scipy.special.softmax(logits_BK, axis=1) @ values_K, rtol=1e-5, atol=1e-6)
    assert samples_BS.shape == (6, 4)

    model = heads.make_head_model(MODEL_CFG, "pointwise", 16)
    params = init(model)
    pred_B = np.asarray(model.apply({"params": params}, x_BF))[:, 0]
    for num_samples in (1, 3):
        samples_BS, point_B = jax.jit(heads.head_predict, static_argnums=(0, 1, 5))(
            "pointwise", model, params, x_BF, jax.random.key(0), num_samples)
        np.testing.assert_allclose(point_B, pred_B, rtol=1e-6)
        np.testing.assert_allclose(samples_BS, np.repeat(pred_B[:, None], num_samples, 1), rtol=1e-6)


def test_samples_fall_in_the_chosen_bins_and_average_to_the_expected_value():
    edges_E = heads.riemann_edges(8, -2.0, 2.0)  # width 0.5
    values_K = heads.riemann_bin_values(edges_E, np.array([-3.0, 6.0]))
    chosen = np.array([0, 3, 7, 9])  # lower tail, [-1, -0.5), [1, 1.5), upper tail
    logits_BK = np.full((2, 10), -1e9, np.float32)
    logits_BK[0, chosen] = [0.0, 1.0, 0.5, -0.5]
    logits_BK[1, chosen[1:3]] = 0.0
    sample = jax.jit(heads.riemann_sample, static_argnums=2)
    samples_BS = np.asarray(sample(jnp.asarray(logits_BK), jax.random.key(1), 40000, values_K, edges_E))
    in_tail = (samples_BS == -3.0) | (samples_BS == 6.0)
    in_bins = ((samples_BS >= -1.0) & (samples_BS < -0.5)) | ((samples_BS >= 1.0) & (samples_BS < 1.5))
    assert np.all(in_tail | in_bins) and not np.any(in_tail[1])
    probs = scipy.special.softmax(logits_BK[0, chosen].astype(np.float64))
    freq = [np.mean(samples_BS[0] == -3.0), np.mean(in_bins[0] & (samples_BS[0] < 0)),
            np.mean(in_bins[0] & (samples_BS[0] > 0)), np.mean(samples_BS[0] == 6.0)]
    np.testing.assert_allclose(freq, probs, atol=0.01)
    expected_B = np.asarray(heads.riemann_expected_value(jnp.asarray(logits_BK), values_K))
    np.testing.assert_allclose(samples_BS.mean(axis=1), expected_B, atol=0.03)
    np.testing.assert_allclose(expected_B[1], 0.5 * (-0.75 + 1.25), atol=1e-6)


def test_unknown_method_names_the_config_field():
    with pytest.raises(GenreError, match=r"^config\.head\.method: unknown head 'histogram'"):
        heads.make_head_model(MODEL_CFG, "histogram", 16)
    assert set(heads.HEADS) == {"pointwise", "riemann"}


def synthetic_arrays(seed=0, num_features=4):
    rng = np.random.default_rng(seed)
    w_F = rng.normal(size=num_features)
    arrays = {}
    for split, n in (("train", 256), ("val", 60), ("test", 50)):  # val/test need padding rows
        x_NF = rng.normal(size=(n, num_features)).astype(np.float32)
        z_N = (x_NF @ w_F / np.linalg.norm(w_F) + 0.05 * rng.normal(size=n)).astype(np.float32)
        arrays[split] = {"x": x_NF, "z": z_N, "tokens": np.zeros((n, 2), np.int32)}
    return arrays


@pytest.mark.parametrize("method", ["pointwise", "riemann"])
def test_head_phase_trains_and_evaluates_in_evaluate_schema(method, tmp_path):
    config = ConfigDict(dict(
        seed=0, model=MODEL_CFG,
        head=dict(method=method, num_bins=32, low=-3.0, high=3.0, smoothing=1.0, learning_rate=1e-2,
                  weight_decay=0.0, batch_size=30, max_epochs=3, patience=3, warmup_steps=2, lr_floor=0.1,
                  grad_clip=1.0, num_samples=16),
        eval=dict(batch_size=40, splits="val,test")))
    arrays, mesh = synthetic_arrays(), parallel.data_mesh()
    params = heads.run_head_phase(config, arrays, 4, str(tmp_path), mesh, {"dataset": "synthetic"})
    restored = heads.run_head_phase(config, arrays, 4, str(tmp_path), mesh, {})  # done: restores best
    jax.tree.map(np.testing.assert_array_equal, restored, params)

    with open(tmp_path / "head" / method / "log.jsonl") as f:
        log = [json.loads(line) for line in f]
    assert len(log) == 3
    assert log[-1]["train_loss"] < log[0]["train_loss"] and log[-1]["val_loss"] < log[0]["val_loss"]

    result = heads.evaluate_head(config, arrays, params, 2.0, mesh, str(tmp_path / "eval"))
    num_samples = 16 if method == "riemann" else 1
    assert set(result) == {"method", "num_samples", "temperature", "splits", "wall_time_s"}
    assert (result["method"], result["num_samples"]) == (method, num_samples)
    for split, n in (("val", 60), ("test", 50)):
        scores = result["splits"][split]
        assert set(scores) == {*metrics.AGGREGATIONS, "distribution"}
        assert set(scores["distribution"]) == {"crps", "coverage_90"}
        assert set(scores["greedy"]) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
        assert np.isclose(scores["greedy"]["rmse_original"], 2.0 * scores["greedy"]["rmse"])
        saved = np.load(tmp_path / "eval" / f"predictions_{split}.npz")
        assert saved["samples_z"].shape == (n, num_samples) and saved["greedy_z"].shape == (n,)
        np.testing.assert_array_equal(saved["target_z"], arrays[split]["z"])
        if method == "pointwise":  # one sample equal to the prediction: CRPS is its MAE
            assert np.isclose(scores["distribution"]["crps"], scores["greedy"]["mae"])
            assert scores["mean"] == scores["greedy"]
