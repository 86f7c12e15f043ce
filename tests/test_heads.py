
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from ml_collections import ConfigDict

from genre_jax import heads
from genre_jax.errors import GenreError

from tolerance import EPS32

MODEL_CFG = ConfigDict(dict(d_model=16, mlp_hidden=32, mlp_layers=1, dropout=0.0))


def reference_targets(z_B, edges_E, smoothing):
    """float64 SciPy reference: the normal CDF over [-inf, edges..., inf]."""
    sigma = smoothing * (edges_E[1] - edges_E[0])
    bounds = np.concatenate([[-np.inf], np.asarray(edges_E, np.float64), [np.inf]])
    cdf_BC1 = scipy.stats.norm.cdf((bounds[None, :] - np.asarray(z_B, np.float64)[:, None]) / sigma)
    return np.diff(cdf_BC1, axis=1)


def head_cfg(**overrides):
    return ConfigDict(dict(dict(method="riemann", num_bins=16, low=-3.0, high=3.0, smoothing=1.0, targets="integrated",
                                tails="train_mean"), **overrides))


def test_riemann_targets_sum_to_one_and_match_the_normal_cdf():
    z_B = np.array([-5.0, -3.0, -2.95, -0.1, 0.0, 1.37, 2.99, 3.0, 8.0], np.float32)
    for num_bins, smoothing in ((16, 1.0), (256, 1.0), (256, 2.5)):
        edges_E = heads.riemann_edges(num_bins)
        targets_BC = np.asarray(heads.riemann_targets(z_B, edges_E, smoothing))
        assert targets_BC.shape == (len(z_B), num_bins + 2)
        # float32 masses (differences of ndtr values <= 1: a few eps each) divided by their float32 sum
        # over C = num_bins + 2 bins (off by up to C eps) and rounded: each target within
        # (C + 1) eps of its share, plus the few eps of its mass; summed here in float64
        reference_BC = reference_targets(z_B, edges_E, smoothing)
        np.testing.assert_allclose(targets_BC.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=(num_bins + 3) * EPS32)
        np.testing.assert_allclose(targets_BC, reference_BC, rtol=0,
                                   atol=((num_bins + 3) * reference_BC.max() + 4) * EPS32)
    # far in a tail: all mass in the tail bin; at a boundary: half in the tail (ndtr(0) = 0.5, then normalized)
    targets_BC = np.asarray(heads.riemann_targets(z_B, heads.riemann_edges(16), 1.0))
    assert targets_BC[0, 0] > 0.999 and targets_BC[-1, -1] > 0.999
    np.testing.assert_allclose([targets_BC[1, 0], targets_BC[7, -1]], 0.5, rtol=(16 + 3) * EPS32)


def test_zero_smoothing_gives_one_hot_labels_in_the_containing_bin():
    edges_E = heads.riemann_edges(6, -3.0, 3.0)  # bins of width 1
    z_B = np.array([-4.0, -3.0, -0.5, 0.0, 2.9, 3.0, 7.0], np.float32)
    targets_BC = np.asarray(heads.riemann_targets(z_B, edges_E, 0.0))
    np.testing.assert_array_equal(targets_BC.argmax(1), [0, 1, 3, 4, 6, 7, 7])
    np.testing.assert_array_equal(targets_BC.sum(1), 1.0)


def test_bin_values_use_train_tail_means_with_a_fallback():
    edges_E = heads.riemann_edges(6, -3.0, 3.0)
    values_C = heads.riemann_bin_values(edges_E, np.array([-5.0, -4.0, 0.0, 3.0, 5.0]))
    np.testing.assert_allclose(values_C, [-4.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 4.0])
    np.testing.assert_allclose(heads.riemann_bin_values(edges_E, np.zeros(3))[[0, -1]], [-3.5, 3.5])
    with pytest.raises(GenreError, match="config.head.low/high"):
        heads.riemann_edges(8, 1.0, 1.0)


def test_released_layout_centres_targets_and_half_normal_tails():
    edges_E = heads.riemann_edges(12, -3.0, 3.0)  # width 0.5
    values_C = heads.riemann_bin_values(edges_E, np.array([-9.0, 9.0]), "half_normal")  # train z ignored
    tail = 0.5 * np.sqrt(2 / np.pi)
    np.testing.assert_allclose(values_C[[0, 1, -2, -1]], [-3 - tail, -2.75, 2.75, 3 + tail], rtol=1e-6)
    z_B = np.array([-5.0, -3.0, 0.1, 2.9, 4.0], np.float32)
    targets_BC = np.asarray(heads.riemann_targets(z_B, edges_E, 0.75, "centres", values_C))
    density_BC = np.exp(-0.5 * ((values_C[None, :].astype(np.float64) - z_B[:, None]) / (0.75 * 0.5)) ** 2)
    reference_BC = density_BC / density_BC.sum(1, keepdims=True)
    # a float32 softmax over C = 14 scores: its sum is off by up to C eps, and each exp by ~eps times the
    # score's distance from the top, which t e^-t keeps under eps in absolute terms
    np.testing.assert_allclose(targets_BC, reference_BC, rtol=0, atol=(14 * reference_BC.max() + 2) * EPS32)
    assert targets_BC[0].argmax() == 0 and targets_BC[-1].argmax() == 13  # beyond the edges: the tails
    with pytest.raises(GenreError, match="config.head.tails"):
        heads.riemann_bin_values(edges_E, None, "edges")


def test_own_mlp_is_the_released_stack_and_its_error_selects_epochs():
    model = heads.make_head_model(MODEL_CFG, heads.RIEMANN, 16, mlp_hidden=8, mlp_layers=3)
    params, batch = init(model), tiny_batch()
    assert [params[f"hidden_{i}"]["kernel"].shape for i in range(3)] == [(3, 8), (8, 8), (8, 8)]
    assert params["head"]["kernel"].shape == (8, 18) and "encoder" not in params
    h = batch["x"].astype(np.float64)
    for i in range(3):
        h = np.maximum(h @ np.asarray(params[f"hidden_{i}"]["kernel"]) + np.asarray(params[f"hidden_{i}"]["bias"]), 0)
    logits_BC = h @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
    np.testing.assert_allclose(model.apply({"params": params}, batch["x"]), logits_BC, rtol=1e-4, atol=1e-5)

    values_C = heads.riemann_bin_values(heads.riemann_edges(16), None, "half_normal")
    total, count = heads.point_error_fn(heads.RIEMANN, model, values_C)(params, batch, None, False)
    point_B = scipy.special.softmax(logits_BC, axis=1) @ values_C
    real = batch["weight"] > 0
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), np.sum((point_B - batch["z"])[real] ** 2), rtol=1e-4)


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

    model = heads.make_head_model(MODEL_CFG, heads.RIEMANN, cfg.num_bins)
    params = init(model)
    logits_BC = np.asarray(model.apply({"params": params}, batch["x"]), np.float64)
    total, count = heads.RIEMANN.make_loss(model, cfg, None)(params, batch, None, False)
    targets_BC = reference_targets(batch["z"], heads.riemann_edges(16), 1.5)
    ce_B = -np.sum(targets_BC * scipy.special.log_softmax(logits_BC, axis=1), axis=1)
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), ce_B[real].sum(), rtol=1e-5)

    model = heads.make_head_model(MODEL_CFG, heads.POINTWISE, cfg.num_bins)
    params = init(model)
    pred_B = np.asarray(model.apply({"params": params}, batch["x"]), np.float64)[:, 0]
    total, count = heads.POINTWISE.make_loss(model, cfg, None)(params, batch, None, False)
    assert float(count) == 4.0
    np.testing.assert_allclose(float(total), np.sum((pred_B - batch["z"])[real] ** 2), rtol=1e-5)


def test_dropout_only_in_training_mode():
    model = heads.make_head_model(ConfigDict(dict(MODEL_CFG, dropout=0.5)), heads.POINTWISE, 16)
    params, batch = init(model), tiny_batch()
    loss_fn = heads.POINTWISE.make_loss(model, head_cfg(), None)
    eval_loss = loss_fn(params, batch, None, False)[0]
    assert float(eval_loss) == float(loss_fn(params, batch, None, False)[0])
    train_losses = {float(loss_fn(params, batch, jax.random.key(k), True)[0]) for k in range(3)}
    assert len(train_losses) == 3


def test_expected_value_prediction_matches_numpy():
    model = heads.make_head_model(MODEL_CFG, heads.RIEMANN, 16)
    params, x_BF = init(model), tiny_batch()["x"]
    edges_E = heads.riemann_edges(16)
    values_C = heads.riemann_bin_values(edges_E, np.array([-4.0, 5.0]))
    samples_BG, point_B = heads.head_predict(heads.RIEMANN, model, params, x_BF, jax.random.key(0), 4, values_C,
                                             edges_E)
    logits_BC = np.asarray(model.apply({"params": params}, x_BF), np.float64)
    np.testing.assert_allclose(point_B, scipy.special.softmax(logits_BC, axis=1) @ values_C, rtol=1e-5, atol=1e-6)
    assert samples_BG.shape == (6, 4)

    model = heads.make_head_model(MODEL_CFG, heads.POINTWISE, 16)
    params = init(model)
    pred_B = np.asarray(model.apply({"params": params}, x_BF))[:, 0]
    for num_samples in (1, 3):
        samples_BG, point_B = jax.jit(heads.head_predict, static_argnums=(0, 1, 5))(
            heads.POINTWISE, model, params, x_BF, jax.random.key(0), num_samples)
        np.testing.assert_allclose(point_B, pred_B, rtol=1e-6)
        np.testing.assert_allclose(samples_BG, np.repeat(pred_B[:, None], num_samples, 1), rtol=1e-6)


def test_samples_fall_in_the_chosen_bins_and_average_to_the_expected_value():
    edges_E = heads.riemann_edges(8, -2.0, 2.0)  # width 0.5
    values_C = heads.riemann_bin_values(edges_E, np.array([-3.0, 6.0]))
    chosen = np.array([0, 3, 7, 9])  # lower tail, [-1, -0.5), [1, 1.5), upper tail
    logits_BC = np.full((2, 10), -1e9, np.float32)
    logits_BC[0, chosen] = [0.0, 1.0, 0.5, -0.5]
    logits_BC[1, chosen[1:3]] = 0.0
    sample = jax.jit(heads.riemann_sample, static_argnums=2)
    samples_BG = np.asarray(sample(jnp.asarray(logits_BC), jax.random.key(1), 40000, values_C, edges_E))
    in_tail = (samples_BG == -3.0) | (samples_BG == 6.0)
    in_bins = ((samples_BG >= -1.0) & (samples_BG < -0.5)) | ((samples_BG >= 1.0) & (samples_BG < 1.5))
    assert np.all(in_tail | in_bins) and not np.any(in_tail[1])
    probs = scipy.special.softmax(logits_BC[0, chosen].astype(np.float64))
    freq = [np.mean(samples_BG[0] == -3.0), np.mean(in_bins[0] & (samples_BG[0] < 0)),
            np.mean(in_bins[0] & (samples_BG[0] > 0)), np.mean(samples_BG[0] == 6.0)]
    np.testing.assert_allclose(freq, probs, atol=0.01)  # 4 standard errors: sqrt(p (1 - p) / 40000) <= 0.0025
    expected_B = np.asarray(heads.riemann_expected_value(jnp.asarray(logits_BC), values_C))
    standard_error_B = samples_BG.std(axis=1) / np.sqrt(samples_BG.shape[1])  # 0.012 and 0.005
    assert np.all(np.abs(samples_BG.mean(axis=1) - expected_B) < 4 * standard_error_B)
    np.testing.assert_allclose(expected_B[1], 0.5 * (-0.75 + 1.25), atol=1e-6)
