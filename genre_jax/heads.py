"""Traditional regression heads on the decoder model's MLP encoder (the paper's §3 baselines).

  * **pointwise**: one scalar output trained with MSE on z; the prediction is that scalar.
  * **riemann** (histogram): ``num_bins`` equal bins on [low, high] plus two tail bins
    (-inf, low) and [high, inf), trained with cross-entropy toward Gaussian-smoothed soft labels;
    the point prediction is the expected value under the bin probabilities.

Bin layout (K = num_bins + 2 outputs): index 0 = lower tail, 1..num_bins = interior bins
[edges[k-1], edges[k]), num_bins + 1 = upper tail.

Choices the paper leaves open (config ``head``):
  * Tail representatives: the train-split mean of z inside each tail. That is the squared-error
    optimal constant for a tail under the training distribution, and on skewed targets (z up to
    ±10 is common in TALENT) the alternative low - w/2 / high + w/2 would pull every tail-heavy
    prediction towards ±3. A tail with no train z falls back to low - w/2 / high + w/2.
  * Smoothed targets: a normal with sigma = ``smoothing`` bin widths centred on the true z,
    integrated over each bin with the normal CDF (tails take the tail mass), default 1.0 bin width:
    enough to tie neighbouring bins together without blurring the target over a whole unit of z.
    ``smoothing`` = 0 gives one-hot labels.
  * Samples: pick a bin by its probability, then uniform within it; a tail bin yields its
    representative, so the mean of many samples converges to the expected-value prediction.
  * Evaluation reuses ``evaluate``'s schema. The pointwise head has no distribution, so it is
    scored with S = 1 sample equal to its prediction: CRPS then equals MAE, and 90% coverage is
    the fraction of exact hits (0 in practice). Temperature is reported as 1.0 (not applied).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from genre_jax import evaluate, parallel, train
from genre_jax.errors import GenreError
from genre_jax.models import make_encoder


class HeadRegressor(nn.Module):
    """The decoder model's MLP encoder followed by one linear layer to ``num_outputs``.

    The encoder is built from the same fields and keeps the name ``encoder`` so both models
    share the feature extractor exactly and parameter trees line up.
    """

    num_outputs: int
    encoder_fields: tuple[tuple[str, Any], ...]  # (name, value) pairs of config.model, hashable

    def setup(self):
        fields = dict(self.encoder_fields)
        self.encoder = make_encoder(fields.get("name", "tabular_decoder"), **fields)
        self.head = nn.Dense(self.num_outputs)

    def __call__(self, x_BF, train: bool = False):
        memory_BMD = self.encoder(x_BF, train)
        return self.head(memory_BMD.mean(axis=1))  # outputs_BK; M = 1 for the MLP encoder


# ---------------------------------------------------------------------------------------------
# Riemann bins


def riemann_edges(num_bins: int = 256, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Interior bin edges, edges_E with E = num_bins + 1 (float32)."""
    if int(num_bins) < 1:
        raise GenreError(f"config.head.num_bins: expected a positive integer, got {num_bins}")
    if not float(low) < float(high):
        raise GenreError(f"config.head.low/high: expected low < high, got low={low}, high={high}")
    return np.linspace(float(low), float(high), int(num_bins) + 1).astype(np.float32)


def riemann_bin_values(edges_E: np.ndarray, z_train_N: np.ndarray | None = None) -> np.ndarray:
    """Representative value of each of the K = E + 1 bins: interior centres, tails = train tail means."""
    edges = np.asarray(edges_E, np.float64)
    low, high, width = edges[0], edges[-1], edges[1] - edges[0]
    lower, upper = low - width / 2, high + width / 2
    if z_train_N is not None:
        z = np.asarray(z_train_N, np.float64)
        below, above = z[z < low], z[z >= high]  # same sides as the bin assignment
        lower = below.mean() if below.size else lower
        upper = above.mean() if above.size else upper
    centres = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([[lower], centres, [upper]]).astype(np.float32)


def riemann_targets(z_B, edges_E, smoothing: float = 1.0):
    """Soft labels targets_BK: N(z, (smoothing * w)^2) integrated over every bin, rows sum to 1."""
    edges_E = jnp.asarray(edges_E, jnp.float32)
    z_B = jnp.asarray(z_B, jnp.float32)
    num_bins = edges_E.shape[0] - 1
    if smoothing <= 0:
        # side="right" puts z == edge in the bin above, matching [a, b) bins and a [high, inf) tail.
        bin_B = jnp.searchsorted(edges_E, z_B, side="right")
        return jax.nn.one_hot(bin_B, num_bins + 2, dtype=jnp.float32)
    sigma = smoothing * (edges_E[1] - edges_E[0])
    inf = jnp.full((1,), jnp.inf, jnp.float32)
    bounds_K1 = jnp.concatenate([-inf, edges_E, inf])  # K + 1 boundaries, tails included
    a_BK = (bounds_K1[None, :-1] - z_B[:, None]) / sigma
    b_BK = (bounds_K1[None, 1:] - z_B[:, None]) / sigma
    # Above the mean take differences of the upper-tail function: CDF values near 1 would cancel
    # in float32 and zero out the small far-right masses.
    mass_BK = jnp.where(a_BK > 0, ndtr(-a_BK) - ndtr(-b_BK), ndtr(b_BK) - ndtr(a_BK))
    mass_BK = jnp.maximum(mass_BK, 0.0)
    return mass_BK / jnp.sum(mass_BK, axis=-1, keepdims=True)


def riemann_expected_value(logits_BK, values_K):
    return jax.nn.softmax(logits_BK, axis=-1) @ jnp.asarray(values_K, jnp.float32)


def riemann_sample(logits_BK, key, num_samples: int, values_K, edges_E):
    """samples_BS: a bin by its probability, then uniform inside it (a tail gives its representative)."""
    values_K = jnp.asarray(values_K, jnp.float32)
    edges_E = jnp.asarray(edges_E, jnp.float32)
    batch = logits_BK.shape[0]
    bin_key, pos_key = jax.random.split(key)
    bin_BS = jax.random.categorical(bin_key, logits_BK[:, None, :], axis=-1, shape=(batch, num_samples))
    start_K = jnp.concatenate([values_K[:1], edges_E[:-1], values_K[-1:]])
    width_K = jnp.concatenate([jnp.zeros(1), jnp.diff(edges_E), jnp.zeros(1)])
    u_BS = jax.random.uniform(pos_key, (batch, num_samples))
    return start_K[bin_BS] + u_BS * width_K[bin_BS]


# ---------------------------------------------------------------------------------------------
# Losses: (sum over real rows, count of real rows), like every other phase


def pointwise_loss(pred_B, z_B, weight_B):
    return jnp.sum(weight_B * jnp.square(pred_B - z_B)), jnp.sum(weight_B)


def riemann_loss(logits_BK, z_B, weight_B, edges_E, smoothing: float):
    targets_BK = riemann_targets(z_B, edges_E, smoothing)
    ce_B = -jnp.sum(targets_BK * jax.nn.log_softmax(logits_BK, axis=-1), axis=-1)
    return jnp.sum(weight_B * ce_B), jnp.sum(weight_B)


def _apply(model, params, x_BF, key, train: bool):
    return model.apply({"params": params}, x_BF, train=train, rngs={"dropout": key} if train else None)


def pointwise_loss_fn(model, cfg=None):
    def loss_fn(params, batch, key, train):
        pred_B = _apply(model, params, batch["x"], key, train)[:, 0]
        return pointwise_loss(pred_B, batch["z"], batch["weight"])

    return loss_fn


def riemann_loss_fn(model, cfg):
    edges_E = riemann_edges(int(cfg.num_bins), float(cfg.low), float(cfg.high))
    smoothing = float(cfg.smoothing)
    if smoothing < 0:
        raise GenreError(f"config.head.smoothing: expected >= 0 bin widths, got {smoothing}")

    def loss_fn(params, batch, key, train):
        logits_BK = _apply(model, params, batch["x"], key, train)
        return riemann_loss(logits_BK, batch["z"], batch["weight"], edges_E, smoothing)

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Prediction


def _pointwise_predict(outputs_BK, key, num_samples, values_K, edges_E):
    point_B = outputs_BK[:, 0]
    return jnp.repeat(point_B[:, None], num_samples, axis=1), point_B


def _riemann_predict(outputs_BK, key, num_samples, values_K, edges_E):
    return (riemann_sample(outputs_BK, key, num_samples, values_K, edges_E),
            riemann_expected_value(outputs_BK, values_K))


@dataclasses.dataclass(frozen=True)
class Head:
    num_outputs: Callable[[int], int]  # num_bins -> K
    loss_fn: Callable[..., Callable]  # (model, cfg) -> loss_fn(params, batch, key, train)
    predict: Callable[..., Any]  # (outputs_BK, key, S, values_K, edges_E) -> (samples_BS, point_B)


HEADS = {
    "pointwise": Head(lambda num_bins: 1, pointwise_loss_fn, _pointwise_predict),
    "riemann": Head(lambda num_bins: int(num_bins) + 2, riemann_loss_fn, _riemann_predict),
}


def _head(method: str) -> Head:
    if method not in HEADS:
        raise GenreError(f"config.head.method: unknown head {method!r}; expected one of {sorted(HEADS)}")
    return HEADS[method]


def make_head_model(model_cfg, method: str, num_bins: int = 256) -> HeadRegressor:
    """The head model with the decoder model's encoder sizes from ``config.model``."""
    head = _head(method)
    return HeadRegressor(num_outputs=head.num_outputs(num_bins),
                         encoder_fields=tuple(sorted(model_cfg.to_dict().items())))


def make_head_loss(method: str, model, cfg):
    return _head(method).loss_fn(model, cfg)


def head_predict(method: str, model, params, x_BF, key, num_samples: int, bin_values_K=None, edges_E=None):
    """(samples_BS, point_B) in z units; bin_values_K / edges_E are only read by the riemann head."""
    outputs_BK = model.apply({"params": params}, x_BF, train=False)
    return _head(method).predict(outputs_BK, key, num_samples, bin_values_K, edges_E)


# ---------------------------------------------------------------------------------------------
# Phases


def head_phase_dir(method: str) -> str:
    """Each head keeps its own checkpoints beside ``ce`` and ``rl/<method>``."""
    return os.path.join("head", method)


def _bins(cfg, z_train_N):
    if cfg.method != "riemann":
        return None, None
    edges_E = riemann_edges(int(cfg.num_bins), float(cfg.low), float(cfg.high))
    return riemann_bin_values(edges_E, z_train_N), edges_E


def init_head_params(config, num_features: int):
    """Fresh params of the configured head (seeded by config.seed); also the template to restore into."""
    model = make_head_model(config.model, str(config.head.method), int(config.head.num_bins))
    x_1F = jnp.zeros((1, num_features), jnp.float32)
    return model.init({"params": jax.random.key(int(config.seed))}, x_1F, train=False)["params"]


def run_head_phase(config, arrays, num_features: int, workdir: str, mesh, meta: dict) -> Any:
    """Trains the configured head from scratch with early stopping; returns the best-validation params."""
    cfg = config.head
    method = str(cfg.method)
    model = make_head_model(config.model, method, int(cfg.num_bins))
    loss_fn = make_head_loss(method, model, cfg)
    params = init_head_params(config, num_features)
    meta = {**meta, "head": cfg.to_dict()}
    return train.run_supervised_phase(config, cfg, head_phase_dir(method), loss_fn, arrays, ("x", "z"), params,
                                      workdir, mesh, meta)


def make_head_predict_fn(method: str, model, num_samples: int, bin_values_K, edges_E, mesh):
    def predict(params, x_BF, key):
        return head_predict(method, model, params, x_BF, key, num_samples, bin_values_K, edges_E)

    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(predict, in_shardings=(rep, data, rep), out_shardings=(data, data))


def evaluate_head(config, arrays, params, y_std: float, mesh, out_dir: str) -> dict:
    """``evaluate.evaluate``'s schema for a head: greedy = point prediction, mean/median over samples."""
    cfg = config.head
    method = str(cfg.method)
    model = make_head_model(config.model, method, int(cfg.num_bins))
    num_samples = int(cfg.num_samples) if method == "riemann" else 1
    bin_values_K, edges_E = _bins(cfg, arrays["train"]["z"])
    predict_fn = make_head_predict_fn(method, model, num_samples, bin_values_K, edges_E, mesh)
    header = {"method": method, "num_samples": num_samples, "temperature": 1.0}
    return evaluate.score_splits(config, predict_fn, params, arrays, y_std, mesh, out_dir, header)
