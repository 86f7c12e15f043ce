"""A fitted model's predictive distribution in the forms ScoringBench-style evaluation takes.

Benchmarks of probabilistic regression (ScoringBench's CRPS / interval / log / pinball scores) take one
of three forms per test row; this turns a fitted ``genre_jax.GenReRegressor`` or a
``genre_jax.predictor.Predictor`` and its inputs into each, in the target's original units:

  histogram(model, X)            {"bin_edges": [B + 1], "probabilities": [N, B]}: one bin per distinct
                                 value the decoder can emit (tokenizers with at most 4,096 sequences;
                                 None otherwise), bin edges shared by every row (np.broadcast_to for
                                 [N, B + 1]), increasing, bins meeting halfway between neighbouring
                                 values (``scores.Discrete.histogram``); rows sum to 1. A bin's density
                                 is its probability over its width: the log score of
                                 ``scores.Discrete.log_score``.
  samples(model, X, k)           [N, k] draws of the predictive distribution (inverse-CDF draws from
                                 the exact distribution where the run decodes exactly, else the sampler).
  quantiles(model, X, levels)    {"levels": [P], "quantiles": [N, P]}: the model's quantiles at
                                 ``levels`` (default ``scores.QUANTILE_LEVELS``, 0.05 .. 0.95), from the
                                 run's decoding (``output_type="quantiles"``).
  scoring_inputs(model, X)       all three in one dict.

``X`` is what the model's ``predict`` takes: the estimator's feature matrix, or for a ``Predictor`` its
numeric features (or a (num, cat) pair). Scores of these forms on our own evaluation splits are in
results.json (``scores.distribution_scores``); this adapter is for scoring the model by someone
else's code.

  from experiments.scoring_adapter import scoring_inputs
  forms = scoring_inputs(GenReRegressor(config="tiny").fit(X_train, y_train), X_test)
"""
from __future__ import annotations

import numpy as np

from genre_jax import scores


def _is_predictor(model) -> bool:
    from genre_jax.predictor import Predictor
    return isinstance(model, Predictor)


def _predict(model, X, output_type: str, **kwargs):
    if _is_predictor(model):
        num, cat = X if isinstance(X, tuple) else (X, None)
        return model.predict(num, cat, output_type=output_type, **kwargs)
    return model.predict(X, output_type=output_type, **kwargs)


def histogram(model, X) -> dict | None:
    """{"bin_edges": [B + 1], "probabilities": [N, B]} of the exact distribution; None where the
    tokenizer has too many sequences to enumerate (use ``samples``)."""
    full = _predict(model, X, "full")
    if "support" not in full:
        return None
    _, edges_B1, probs_NB = scores.Discrete(full["support"], full["probabilities"]).histogram()
    return {"bin_edges": edges_B1, "probabilities": probs_NB}


def samples(model, X, num_samples: int = 128) -> np.ndarray:
    """[N, num_samples] draws of the predictive distribution, original units."""
    if _is_predictor(model):
        num, cat = X if isinstance(X, tuple) else (X, None)
        return np.asarray(model.sample(num, cat, num_samples))
    return np.asarray(model.sample(X, num_samples))


def quantiles(model, X, levels=scores.QUANTILE_LEVELS) -> dict:
    """{"levels": [P], "quantiles": [N, P]}, original units."""
    levels_P = np.asarray(levels, np.float64)
    per_level = _predict(model, X, "quantiles", quantiles=levels_P)
    return {"levels": levels_P, "quantiles": np.stack([np.asarray(q, np.float64) for q in per_level], axis=1)}


def scoring_inputs(model, X, num_samples: int = 128, levels=scores.QUANTILE_LEVELS) -> dict:
    """{"histogram": ``histogram`` (or None), "samples": ``samples``, "quantiles": ``quantiles``}."""
    return {"histogram": histogram(model, X), "samples": samples(model, X, num_samples),
            "quantiles": quantiles(model, X, levels)}
