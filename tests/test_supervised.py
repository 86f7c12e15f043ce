"""Supervised phases: the head phase trained and evaluated end to end on synthetic arrays."""
import json

import jax
import numpy as np
import pytest

from experiments.configs import tabular
from genre_jax import evaluate, metrics, supervised


def test_config_variants():
    assert set(tabular.VARIANTS) == {"quick", "paper", "tiny"}


def synthetic_arrays(seed=0, num_features=4):
    rng = np.random.default_rng(seed)
    w_F = rng.normal(size=num_features)
    arrays = {}
    for split, n in (("train", 256), ("val", 60), ("test", 50)):  # val/test need padding rows
        x_NF = rng.normal(size=(n, num_features)).astype(np.float32)
        z_N = (x_NF @ w_F / np.linalg.norm(w_F) + 0.05 * rng.normal(size=n)).astype(np.float32)
        arrays[split] = {"x": x_NF, "z": z_N, "tokens": np.zeros((n, 2), np.int32)}
    return arrays


# The release's head: its own MLP, soft labels at the bin centres, half-normal tails, best epoch by val MSE.
RELEASED = dict(mlp_hidden=24, mlp_layers=3, targets="centres", tails="half_normal", smoothing=0.75, select="mse")


def head_config(method, **overrides):
    config = tabular.get_config("tiny")
    config.model.update(d_model=16, mlp_hidden=32, mlp_layers=1, dropout=0.0)
    config.head.update(method=method, num_bins=32, low=-3.0, high=3.0, smoothing=1.0, learning_rate=1e-2,
                       weight_decay=0.0, batch_size=30, max_epochs=3, patience=3, warmup_steps=2, lr_floor=0.1,
                       grad_clip=1.0, num_samples=16)
    config.head.update(**overrides)
    config.eval.update(batch_size=40, splits="val,test")
    return config


@pytest.mark.parametrize("method,overrides", [("pointwise", {}), ("riemann", {}), ("riemann", RELEASED)],
                         ids=["pointwise", "riemann", "riemann-released"])
def test_head_phase_trains_and_evaluates_in_evaluate_schema(method, overrides, tmp_path, make_context):
    arrays = synthetic_arrays()
    ctx = make_context(arrays, head_config(method, **overrides), y_std=2.0)
    params = supervised.run_head_phase(ctx)
    restored = supervised.run_head_phase(ctx)  # done: restores best
    jax.tree.map(np.testing.assert_array_equal, restored, params)

    with open(tmp_path / "head" / method / "log.jsonl") as f:
        log = [json.loads(line) for line in f]
    assert len(log) == 3
    assert log[-1]["train_loss"] < log[0]["train_loss"] and log[-1]["val_loss"] < log[0]["val_loss"]
    select = "val_mse" if overrides else "val_loss"
    assert [k for k in log[0] if k.startswith("val_")][0] == select
    best = min(log, key=lambda r: r[select])
    assert log[-1][f"best_{select}"] == best[select]
    if overrides:
        assert "hidden_2" in params and "encoder" not in params
        point_N = evaluate.heads.head_predict(ctx.settings.head.method.spec, supervised.head_model(ctx), params,
                                              arrays["val"]["x"], None, 0,
                                              *reversed(evaluate.heads.bin_layout(ctx.settings.head,
                                                                                  arrays["train"]["z"])))[1]
        np.testing.assert_allclose(np.mean((np.asarray(point_N) - arrays["val"]["z"]) ** 2), best[select], rtol=1e-4)

    result = evaluate.evaluate_head(ctx, params, supervised.head_model(ctx), str(tmp_path / "eval"))
    num_samples = 16 if method == "riemann" else 1
    assert set(result) == {"method", "num_samples", "temperature", "splits", "wall_time_s"}
    assert (result["method"], result["num_samples"]) == (method, num_samples)
    for split, n in (("val", 60), ("test", 50)):
        scores = result["splits"][split]
        assert set(scores) == {*metrics.AGGREGATIONS, "distribution"}
        # the block of scores.distribution_scores; a head's samples have no log score
        assert set(scores["distribution"]) == {"crps", "coverage_90", "pinball", "interval_score", "log_score",
                                               "log_score_floored"}
        assert scores["distribution"]["log_score"] is None
        assert set(scores["greedy"]) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
        assert np.isclose(scores["greedy"]["rmse_original"], 2.0 * scores["greedy"]["rmse"])
        saved = np.load(tmp_path / "eval" / f"predictions_{split}.npz")
        assert saved["samples_z"].shape == (n, num_samples) and saved["greedy_z"].shape == (n,)
        np.testing.assert_array_equal(saved["target_z"], arrays[split]["z"])
        if method == "pointwise":  # one sample equal to the prediction: CRPS is its MAE
            assert np.isclose(scores["distribution"]["crps"], scores["greedy"]["mae"])
            assert scores["mean"] == scores["greedy"]
