"""One decoder for every prediction: evaluation, the ``Predictor``, its command line and the estimator
all get a predictive distribution here, and turn it into what they report here.

A ``Decoding`` says how: ``exact`` (every sequence the tokenizer allows, with its probability: a
``scores.Discrete``; possible up to ``exact.MAX_SEQUENCES`` sequences) or ``sample`` (``num_samples``
draws per input: a ``scores.Samples``), at a temperature. ``resolve`` reads it from a run's ``eval``
settings (``decode``: sample | exact | auto), so a checkpoint is predicted from the way its evaluation
scored it, and calibrations fitted there (the conformal residuals of the mean) apply to the same
predictor. ``OUTPUT_TYPES`` are the names probabilistic regressors answer ``predict(X, output_type=)``
with (TabPFN's, plus the greedy decode); ``output`` computes them from one distribution.

Shape letters as in ``models.py``'s legend (N rows, G samples per row, S sequences, U distinct values,
P quantile levels); everything here is in z units (``Predictor`` converts).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from genre_jax import exact, metrics, parallel, sampling, scores
from genre_jax.errors import GenreError

DECODES = ("sample", "exact", "auto")
OUTPUT_TYPES = ("mean", "median", "mode", "greedy", "quantiles", "full", "main")
DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # TabPFN's default levels


class Decoding(NamedTuple):
    how: str  # "exact" | "sample"
    num_samples: int  # draws per row when sampling (also how many an exact decode stores beside its probabilities)
    temperature: float

    def to_dict(self) -> dict:
        return {"decode": self.how, "num_samples": int(self.num_samples), "temperature": float(self.temperature)}

    @classmethod
    def from_dict(cls, d: dict) -> "Decoding":
        return cls(d["decode"], int(d["num_samples"]), float(d["temperature"]))


def resolve(decode: str, tokenizer, num_samples: int, temperature: float,
            max_sequences: int = exact.MAX_SEQUENCES) -> Decoding:
    """``auto`` -> exact when the tokenizer has at most ``max_sequences`` sequences (the run's
    ``eval.exact_max_sequences``, ``exact.MAX_SEQUENCES`` by default), else sample."""
    if decode not in DECODES:
        raise GenreError(f"decode: expected one of {list(DECODES)}, got {decode!r}")
    if decode == "auto":
        decode = "exact" if exact.num_sequences(tokenizer) <= max_sequences else "sample"
    return Decoding(decode, int(num_samples), float(temperature))


def from_eval_section(section, tokenizer) -> Decoding:
    """The decoding a run's ``eval`` section (a config dict, as a checkpoint's meta holds it) asks for;
    configs older than ``eval.decode`` sampled."""
    get = section.get
    return resolve(get("decode", "sample"), tokenizer, get("num_samples", 128), get("temperature", 1.0),
                   get("exact_max_sequences", exact.MAX_SEQUENCES))


def support_z(tokenizer) -> np.ndarray:
    """values_S: the value of every sequence, in ``exact.all_sequences`` order (the order of probs_NS)."""
    return np.asarray(tokenizer.decode(exact.all_sequences(tokenizer)), np.float64)


@parallel.reused
def predict_fn(model, tokenizer, mesh, how: str, num_samples: int):
    """The decoder's jitted (params, x_BF, key, temperature) -> (samples_BG, greedy_B), rows split over
    devices; with ``how="exact"``: (probs_BS over ``exact.all_sequences``, greedy_B). The temperature is
    an argument, not a constant, so calibration tries several without recompiling."""

    def predict(params, x_BF, key, temperature):
        if how == "exact":
            return exact.predict(model, params, x_BF, tokenizer, temperature)
        return sampling.predict(model, params, x_BF, key, tokenizer, num_samples, temperature)

    return parallel.data_parallel(predict, mesh, batch_out=True)


def decode_rows(fn, params, x_NF: np.ndarray, key, batch_size: int, mesh, temperature: float = 1.0):
    """(outputs_N…, greedy_N) of ``predict_fn`` for every row, ``batch_size`` rows per call (one compiled
    shape: the last batch is padded and its padding dropped); batch i decodes with fold_in(key, i)."""
    outputs, greedy = [], []
    temperature = jax.numpy.float32(temperature)
    for i, batch in enumerate(parallel.padded_batches({"x": x_NF}, batch_size)):
        out, point = fn(params, parallel.shard_batch(batch["x"], mesh), jax.random.fold_in(key, i), temperature)
        keep = batch["weight"] > 0
        outputs.append(parallel.to_host(out)[keep])
        greedy.append(parallel.to_host(point)[keep])
    return np.concatenate(outputs), np.concatenate(greedy)


def distribution(outputs, values_S=None):
    """The predictive distribution of ``decode_rows``' first output: samples_NG, or probs_NS with the
    support ``values_S`` (an exact decode)."""
    return scores.Samples(outputs) if values_S is None else scores.Discrete(values_S, outputs)


def mode(dist) -> np.ndarray:
    """The most probable value of each row. Exact: the support value of highest probability (sequences
    of equal value pooled). Samples: the most frequent sampled value, the smallest among ties (decoded
    values sit on the tokenizer's grid, so repeats are the rule where the distribution is peaked)."""
    if isinstance(dist, scores.Discrete):
        values, probs_NS = dist.pooled()
        return values[np.argmax(probs_NS, axis=1)]
    out = np.empty(dist.samples_NG.shape[0])
    for n, row in enumerate(dist.samples_NG):
        values, counts = np.unique(row, return_counts=True)
        out[n] = values[np.argmax(counts)]
    return out


def check_levels(q, where: str) -> np.ndarray:
    q = np.atleast_1d(np.asarray(q, np.float64))
    if q.ndim != 1 or q.size == 0 or not np.all((q >= 0) & (q <= 1)):
        raise GenreError(f"{where}: quantile levels must be a non-empty list in [0, 1], got {np.asarray(q).tolist()}")
    return q


def quantiles(dist, q) -> np.ndarray:
    """[N, P] quantiles: the inverse CDF of an exact distribution, NumPy's linear-interpolation quantile
    of samples (as ``scores.interval_coverage``)."""
    return np.stack([dist.quantile(float(level)) for level in check_levels(q, "quantiles")], axis=1)


def point(dist, greedy_N, how: str) -> np.ndarray:
    """One value per row: ``mean``, ``median``, ``mode`` of the distribution, or the ``greedy`` decode."""
    if how == "mean":
        return dist.mean()
    if how == "median":
        if isinstance(dist, scores.Discrete):
            return dist.quantile(0.5)  # the inverse CDF, as evaluation's exact median
        return metrics.aggregate_samples(dist.samples_NG, "median")  # as evaluation's sampled median
    if how == "mode":
        return mode(dist)
    if how == "greedy":
        return np.asarray(greedy_N, np.float64)
    raise GenreError(f"output_type: expected one of {list(OUTPUT_TYPES)}, got {how!r}")


def output(dist, greedy_N, output_type: str, levels=DEFAULT_QUANTILES, to_y=lambda z: z):
    """``output_type`` of one predictive distribution, through ``to_y`` (z -> original units; affine, as
    the tabular target's standardization is, so the mean maps to the mean):
      mean | median | mode | greedy  [N]
      quantiles                       a list of [N] arrays, one per level (TabPFN's form)
      full                            exact: {"support": [U], "probabilities": [N, U]} (rows sum to 1;
                                      sequences of equal value pooled); sampled: {"samples": [N, G]}
      main                            {"mean", "median", "mode", "greedy": [N], "quantiles": [N, P]}"""
    if output_type not in OUTPUT_TYPES:
        raise GenreError(f"output_type: expected one of {list(OUTPUT_TYPES)}, got {output_type!r}")
    if output_type == "quantiles":
        return list(to_y(quantiles(dist, levels)).T)
    if output_type == "full":
        if isinstance(dist, scores.Discrete):
            values, probs = dist.pooled()
            return {"support": to_y(values), "probabilities": probs}
        return {"samples": to_y(dist.samples_NG)}
    if output_type == "main":
        out = {how: to_y(point(dist, greedy_N, how)) for how in ("mean", "median", "mode", "greedy")}
        return {**out, "quantiles": to_y(quantiles(dist, levels))}
    return to_y(point(dist, greedy_N, output_type))
