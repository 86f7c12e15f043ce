"""Traditional regression heads (the paper's §3 baselines), trained from scratch on z.

  * **pointwise**: one scalar output trained with MSE on z; the prediction is that scalar.
  * **riemann** (histogram): ``num_bins`` equal bins on [low, high] plus two tail bins
    (-inf, low) and [high, inf), trained with cross-entropy toward Gaussian-smoothed soft labels;
    the point prediction is the expected value under the bin probabilities.

Bin layout (C = num_bins + 2 outputs): index 0 = lower tail, 1..num_bins = interior bins
[edges[k-1], edges[k]), num_bins + 1 = upper tail.

Feature extractor (``head.mlp_hidden``): 0 = the decoder model's MLP encoder (same sizes as
``config.model``), then one linear layer; > 0 = the release's own MLP, ``head.mlp_layers`` hidden
layers of ``mlp_hidden`` units (Linear -> ReLU -> Dropout) and a linear output, 3 x 2048 as released.

Choices, as config fields (``paper`` uses the release's, ``quick``/``tiny`` ours):
  * ``head.tails``, the value a tail bin stands for: ``half_normal`` (released) puts it at
    ∓0.5·√(2/π) beyond the edge, the mean of a half-normal of scale 0.5; ``train_mean`` takes the
    train-split mean of z inside each tail, the squared-error optimal constant there: on skewed
    targets (z up to ±10 is common in TALENT) a fixed value pulls every tail prediction towards ±3.4.
    A tail with no train z falls back to half a bin beyond the edge.
  * ``head.targets``, the soft labels around the true z with sigma = ``smoothing`` bin widths:
    ``centres`` (released) evaluates the normal density at each bin's value and normalizes;
    ``integrated`` integrates the normal over each bin with its CDF (tails take the tail mass), which
    stays exact when sigma is small against a bin. ``smoothing`` = 0 gives one-hot labels.
    Released: sigma = 0.75 bin width at the centres; ours: 1.0 bin width, integrated.
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


TAILS = ("half_normal", "train_mean")
TARGETS = ("centres", "integrated")
HALF_NORMAL_TAIL = 0.5 * np.sqrt(2 / np.pi)  # the release's tail values lie this far beyond the edges


class HeadRegressor(nn.Module):
    """A feature extractor followed by one linear layer to ``num_outputs``.

    Without ``mlp_hidden`` the extractor is the decoder model's encoder, built from the same fields
    under the same name ``encoder``, so both models share it exactly and parameter trees line up.
    """

    num_outputs: int
    encoder_fields: tuple[tuple[str, Any], ...]  # (name, value) pairs of config.model, hashable
    mlp_hidden: int = 0  # > 0: the head's own MLP of mlp_layers x mlp_hidden instead
    mlp_layers: int = 0

    def setup(self):
        fields = dict(self.encoder_fields)
        if self.mlp_hidden:
            self.hidden = [nn.Dense(self.mlp_hidden) for _ in range(self.mlp_layers)]
            self.dropout = nn.Dropout(float(fields["dropout"]))
        else:
            self.encoder = make_encoder(fields.get("name", "tabular_decoder"), **fields)
        self.head = nn.Dense(self.num_outputs)

    def __call__(self, x_BF, train: bool = False):
        if not self.mlp_hidden:
            return self.head(self.encoder(x_BF, train).mean(axis=1))  # outputs_BC; M = 1 for the MLP encoder
        h_BH = x_BF
        for layer in self.hidden:
            h_BH = self.dropout(nn.relu(layer(h_BH)), deterministic=not train)
        return self.head(h_BH)


# ---------------------------------------------------------------------------------------------
# Riemann bins


def riemann_edges(num_bins: int = 256, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Interior bin edges, edges_E with E = num_bins + 1 (float32)."""
    if int(num_bins) < 1:
        raise GenreError(f"config.head.num_bins: expected a positive integer, got {num_bins}")
    if not float(low) < float(high):
        raise GenreError(f"config.head.low/high: expected low < high, got low={low}, high={high}")
    return np.linspace(float(low), float(high), int(num_bins) + 1).astype(np.float32)


def riemann_bin_values(edges_E: np.ndarray, z_train_N: np.ndarray | None = None,
                       tails: str = "train_mean") -> np.ndarray:
    """Representative value of each of the C = E + 1 bins: interior centres, then the tails
    (train_mean: the train tail means of ``z_train_N``, else half a bin beyond the edge; half_normal:
    ∓0.5·√(2/π) beyond the edges)."""
    if tails not in TAILS:
        raise GenreError(f"config.head.tails: expected one of {list(TAILS)}, got {tails!r}")
    edges = np.asarray(edges_E, np.float64)
    low, high = edges[0], edges[-1]
    if tails == "half_normal":
        lower, upper = low - HALF_NORMAL_TAIL, high + HALF_NORMAL_TAIL
    else:
        lower, upper = low - (edges[1] - low) / 2, high + (high - edges[-2]) / 2
    if tails == "train_mean" and z_train_N is not None:
        z = np.asarray(z_train_N, np.float64)
        below, above = z[z < low], z[z >= high]  # same sides as the bin assignment
        lower = below.mean() if below.size else lower
        upper = above.mean() if above.size else upper
    centres = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([[lower], centres, [upper]]).astype(np.float32)


def riemann_targets(z_B, edges_E, smoothing: float = 1.0, rule: str = "integrated", values_C=None):
    """Soft labels targets_BC around z with sigma = smoothing bin widths, rows sum to 1: the normal
    integrated over every bin (``integrated``) or its density at ``values_C`` (``centres``)."""
    edges_E = jnp.asarray(edges_E, jnp.float32)
    z_B = jnp.asarray(z_B, jnp.float32)
    num_bins = edges_E.shape[0] - 1
    if smoothing <= 0:
        # side="right" puts z == edge in the bin above, matching [a, b) bins and a [high, inf) tail.
        bin_B = jnp.searchsorted(edges_E, z_B, side="right")
        return jax.nn.one_hot(bin_B, num_bins + 2, dtype=jnp.float32)
    sigma = smoothing * (edges_E[1] - edges_E[0])
    if rule == "centres":
        return jax.nn.softmax(-0.5 * jnp.square((jnp.asarray(values_C, jnp.float32) - z_B[:, None]) / sigma), axis=-1)
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


def riemann_loss(logits_BC, z_B, weight_B, edges_E, smoothing: float, rule: str = "integrated", values_C=None):
    targets_BC = riemann_targets(z_B, edges_E, smoothing, rule, values_C)
    ce_B = -jnp.sum(targets_BC * jax.nn.log_softmax(logits_BC, axis=-1), axis=-1)
    return jnp.sum(weight_B * ce_B), jnp.sum(weight_B)


def _apply(model, params, x_BF, key, train: bool):
    return model.apply({"params": params}, x_BF, train=train, rngs={"dropout": key} if train else None)


def pointwise_loss_fn(model, head=None, values_C=None):
    def loss_fn(params, batch, key, train):
        pred_B = _apply(model, params, batch["x"], key, train)[:, 0]
        return pointwise_loss(pred_B, batch["z"], batch["weight"])

    return loss_fn


def riemann_loss_fn(model, head, values_C):
    """``head``: the validated head settings (num_bins, low, high, smoothing, targets); ``values_C``
    the bins' values (``bin_layout``)."""
    edges_E = riemann_edges(head.num_bins, head.low, head.high)

    def loss_fn(params, batch, key, train):
        logits_BC = _apply(model, params, batch["x"], key, train)
        return riemann_loss(logits_BC, batch["z"], batch["weight"], edges_E, head.smoothing, head.targets, values_C)

    return loss_fn


def point_error_fn(spec, model, values_C):
    """(params, batch, key, train) -> (sum of squared errors of the point prediction, count): the
    validation MSE that selects a head's best epoch, as released."""

    def error_fn(params, batch, key, train):
        point_B = spec.predict(_apply(model, params, batch["x"], key, train), None, 0, values_C, None)[1]
        return pointwise_loss(point_B, batch["z"], batch["weight"])

    return error_fn


# ---------------------------------------------------------------------------------------------
# Prediction


def _pointwise_predict(outputs_BC, key, num_samples, values_C, edges_E):
    point_B = outputs_BC[:, 0]
    return jnp.repeat(point_B[:, None], num_samples, axis=1), point_B


def _riemann_predict(outputs_BC, key, num_samples, values_C, edges_E):
    point_B = riemann_expected_value(outputs_BC, values_C)
    if not num_samples:
        return None, point_B
    return riemann_sample(outputs_BC, key, num_samples, values_C, edges_E), point_B


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """A regression head, as the method registry holds it."""
    num_outputs: Callable[[int], int]  # num_bins -> C
    make_loss: Callable[..., Callable]  # (model, head settings, values_C) -> loss_fn(params, batch, key, train)
    predict: Callable[..., Any]  # (outputs_BC, key, G, values_C, edges_E) -> (samples_BG, point_B)
    binned: bool  # a distribution over bins (sampled) rather than one point


POINTWISE = HeadSpec(lambda num_bins: 1, pointwise_loss_fn, _pointwise_predict, binned=False)
RIEMANN = HeadSpec(lambda num_bins: int(num_bins) + 2, riemann_loss_fn, _riemann_predict, binned=True)


def make_head_model(model_cfg, spec: HeadSpec, num_bins: int = 256, mlp_hidden: int = 0,
                    mlp_layers: int = 0) -> HeadRegressor:
    """The head model: the decoder model's encoder sizes from ``config.model``, or its own MLP."""
    fields = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    return HeadRegressor(num_outputs=spec.num_outputs(num_bins), encoder_fields=tuple(sorted(fields.items())),
                         mlp_hidden=int(mlp_hidden), mlp_layers=int(mlp_layers))


def bin_layout(head, z_train_N) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(edges_E, values_C) of the configured head; (None, None) for a head without bins."""
    if not head.method.spec.binned:
        return None, None
    edges_E = riemann_edges(head.num_bins, head.low, head.high)
    return edges_E, riemann_bin_values(edges_E, z_train_N, head.tails)


def head_predict(spec: HeadSpec, model, params, x_BF, key, num_samples: int, bin_values_C=None, edges_E=None):
    """(samples_BG, point_B) in z units; bin_values_C / edges_E are only read by binned heads."""
    outputs_BC = model.apply({"params": params}, x_BF, train=False)
    return spec.predict(outputs_BC, key, num_samples, bin_values_C, edges_E)
