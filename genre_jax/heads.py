"""Traditional regression heads on the decoder model's MLP encoder (the paper's §3 baselines).

  * **pointwise**: one scalar output trained with MSE on z; the prediction is that scalar.
  * **riemann** (histogram): ``num_bins`` equal bins on [low, high] plus two tail bins
    (-inf, low) and [high, inf), trained with cross-entropy toward Gaussian-smoothed soft labels;
    the point prediction is the expected value under the bin probabilities.

Bin layout (C = num_bins + 2 outputs): index 0 = lower tail, 1..num_bins = interior bins
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
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

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
        return self.head(memory_BMD.mean(axis=1))  # outputs_BC; M = 1 for the MLP encoder


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
    """Representative value of each of the C = E + 1 bins: interior centres, tails = train tail means."""
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
    """Soft labels targets_BC: N(z, (smoothing * w)^2) integrated over every bin, rows sum to 1."""
    edges_E = jnp.asarray(edges_E, jnp.float32)
    z_B = jnp.asarray(z_B, jnp.float32)
    num_bins = edges_E.shape[0] - 1
    if smoothing <= 0:
        # side="right" puts z == edge in the bin above, matching [a, b) bins and a [high, inf) tail.
        bin_B = jnp.searchsorted(edges_E, z_B, side="right")
        return jax.nn.one_hot(bin_B, num_bins + 2, dtype=jnp.float32)
    sigma = smoothing * (edges_E[1] - edges_E[0])
    inf = jnp.full((1,), jnp.inf, jnp.float32)
    bounds_C1 = jnp.concatenate([-inf, edges_E, inf])  # C + 1 boundaries, tails included
    a_BC = (bounds_C1[None, :-1] - z_B[:, None]) / sigma
    b_BC = (bounds_C1[None, 1:] - z_B[:, None]) / sigma
    # Above the mean take differences of the upper-tail function: CDF values near 1 would cancel
    # in float32 and zero out the small far-right masses.
    mass_BC = jnp.where(a_BC > 0, ndtr(-a_BC) - ndtr(-b_BC), ndtr(b_BC) - ndtr(a_BC))
    mass_BC = jnp.maximum(mass_BC, 0.0)
    return mass_BC / jnp.sum(mass_BC, axis=-1, keepdims=True)


def riemann_expected_value(logits_BC, values_C):
    return jax.nn.softmax(logits_BC, axis=-1) @ jnp.asarray(values_C, jnp.float32)


def riemann_sample(logits_BC, key, num_samples: int, values_C, edges_E):
    """samples_BG: a bin by its probability, then uniform inside it (a tail gives its representative)."""
    values_C = jnp.asarray(values_C, jnp.float32)
    edges_E = jnp.asarray(edges_E, jnp.float32)
    batch = logits_BC.shape[0]
    bin_key, pos_key = jax.random.split(key)
    bin_BG = jax.random.categorical(bin_key, logits_BC[:, None, :], axis=-1, shape=(batch, num_samples))
    start_C = jnp.concatenate([values_C[:1], edges_E[:-1], values_C[-1:]])
    width_C = jnp.concatenate([jnp.zeros(1), jnp.diff(edges_E), jnp.zeros(1)])
    u_BG = jax.random.uniform(pos_key, (batch, num_samples))
    return start_C[bin_BG] + u_BG * width_C[bin_BG]


# ---------------------------------------------------------------------------------------------
# Losses: (sum over real rows, count of real rows), like every other phase


def pointwise_loss(pred_B, z_B, weight_B):
    return jnp.sum(weight_B * jnp.square(pred_B - z_B)), jnp.sum(weight_B)


def riemann_loss(logits_BC, z_B, weight_B, edges_E, smoothing: float):
    targets_BC = riemann_targets(z_B, edges_E, smoothing)
    ce_B = -jnp.sum(targets_BC * jax.nn.log_softmax(logits_BC, axis=-1), axis=-1)
    return jnp.sum(weight_B * ce_B), jnp.sum(weight_B)


def _apply(model, params, x_BF, key, train: bool):
    return model.apply({"params": params}, x_BF, train=train, rngs={"dropout": key} if train else None)


def pointwise_loss_fn(model, head=None):
    def loss_fn(params, batch, key, train):
        pred_B = _apply(model, params, batch["x"], key, train)[:, 0]
        return pointwise_loss(pred_B, batch["z"], batch["weight"])

    return loss_fn


def riemann_loss_fn(model, head):
    """``head``: the validated head settings (num_bins, low, high, smoothing)."""
    edges_E = riemann_edges(head.num_bins, head.low, head.high)

    def loss_fn(params, batch, key, train):
        logits_BC = _apply(model, params, batch["x"], key, train)
        return riemann_loss(logits_BC, batch["z"], batch["weight"], edges_E, head.smoothing)

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Prediction


def _pointwise_predict(outputs_BC, key, num_samples, values_C, edges_E):
    point_B = outputs_BC[:, 0]
    return jnp.repeat(point_B[:, None], num_samples, axis=1), point_B


def _riemann_predict(outputs_BC, key, num_samples, values_C, edges_E):
    return (riemann_sample(outputs_BC, key, num_samples, values_C, edges_E),
            riemann_expected_value(outputs_BC, values_C))


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """A regression head, as the method registry holds it."""
    num_outputs: Callable[[int], int]  # num_bins -> C
    make_loss: Callable[..., Callable]  # (model, head settings) -> loss_fn(params, batch, key, train)
    predict: Callable[..., Any]  # (outputs_BC, key, G, values_C, edges_E) -> (samples_BG, point_B)
    binned: bool  # a distribution over bins (sampled) rather than one point


POINTWISE = HeadSpec(lambda num_bins: 1, pointwise_loss_fn, _pointwise_predict, binned=False)
RIEMANN = HeadSpec(lambda num_bins: int(num_bins) + 2, riemann_loss_fn, _riemann_predict, binned=True)


def make_head_model(model_cfg, spec: HeadSpec, num_bins: int = 256) -> HeadRegressor:
    """The head model with the decoder model's encoder sizes from ``config.model``."""
    fields = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    return HeadRegressor(num_outputs=spec.num_outputs(num_bins), encoder_fields=tuple(sorted(fields.items())))


def head_predict(spec: HeadSpec, model, params, x_BF, key, num_samples: int, bin_values_C=None, edges_E=None):
    """(samples_BG, point_B) in z units; bin_values_C / edges_E are only read by binned heads."""
    outputs_BC = model.apply({"params": params}, x_BF, train=False)
    return spec.predict(outputs_BC, key, num_samples, bin_values_C, edges_E)
