"""Predict from a workdir alone: the best checkpoint's meta holds the model config, the tokenizer
spec and the fitted preprocessing, so raw TALENT-style features go in and original units come out.

``Predictor.from_workdir(W)`` loads the decoder method the run trained last (GenRe² for the default
job; CE for a CE-only run), or ``method=``. Predictions run in fixed-size batches (one compiled
shape, bounded memory). Quantiles and intervals use the run's calibration where evaluation fitted
one (``eval/<method>/calibration.json``): the temperature chosen on the validation split, and
split-conformal intervals around the mean.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from genre_jax import calibration, exact, methods, models, paths, sampling
from genre_jax.checkpoint import CHECKSUMS, PhaseCheckpoints
from genre_jax.data import Preprocessor, RawSplit
from genre_jax.errors import GenreError
from genre_jax.tokenizers import tokenizer_from_spec

INTERVALS = ("conformal", "temperature", "raw")
EXACT_MAX_SEQUENCES = 4096  # as evaluation's eval.decode = auto


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _predict_batch(model, params, x_BF, key, tokenizer, num_samples: int, temperature):
    return sampling.predict(model, params, x_BF, key, tokenizer, num_samples, temperature)


def trained_methods(workdir: str) -> list[str]:
    """Decoder methods with a best checkpoint in ``workdir``, the most recently trained last (by the
    time their ``last`` checkpoint was written)."""
    found = []
    for name in methods.NAMES:
        spec = methods.METHODS[name]
        folder = os.path.join(workdir, spec.folder) if spec.decoder and spec.folder else None
        if folder and paths.isdir(os.path.join(folder, "best")):
            last = os.path.join(folder, "last")
            # a bucket "folder" has no time of its own; the checksums.json beside the steps is rewritten
            # at every save
            stamp = os.path.join(last, CHECKSUMS) if paths.is_remote(last) else last
            found.append((paths.getmtime(stamp if paths.exists(stamp) else folder), name))
    return [name for _, name in sorted(found)]


@dataclasses.dataclass
class Predictor:
    model: Any
    params: Any
    tokenizer: Any
    preprocessor: Preprocessor
    method: str = methods.BASELINE
    calibration: dict | None = None  # eval/<method>/calibration.json, if the run wrote one

    @classmethod
    def from_workdir(cls, workdir: str, method: str | None = None) -> "Predictor":
        """The best checkpoint of a decoder ``method`` (ce, an RL or a token-level method) in
        ``workdir`` (a local folder or a bucket URI); None = the decoder method trained last there."""
        paths.check_backend(workdir)
        if method is None:
            trained = trained_methods(workdir)
            if not trained:
                raise GenreError(f"{workdir}: no decoder checkpoint (ce, RL or token-level method); train one "
                                 f"first with launch.py")
            method = trained[-1]
        spec = methods.get(method, field="Predictor.from_workdir method")
        if not spec.decoder:
            raise GenreError(f"Predictor.from_workdir: {method!r} is a {spec.kind} method; the Predictor reads "
                             f"number-decoder checkpoints (ce, RL and token-level methods)")
        path = os.path.join(workdir, spec.folder)
        ckpt = PhaseCheckpoints(workdir, spec.folder) if paths.isdir(path) else None
        meta = ckpt.meta("best") if ckpt is not None else None
        if meta is None:
            raise GenreError(f"{path}: no best checkpoint; train {method} first (--config.phases={spec.kind},eval)")
        if not isinstance(meta.get("preprocessor"), dict):
            raise GenreError(f"{path}: checkpoint meta lacks the preprocessor; expected a checkpoint written by "
                             f"launch.py")
        if meta["preprocessor"].get("kind") is not None:
            raise GenreError(f"{workdir}: a {meta['preprocessor']['kind']} (code-metric) workdir; the Predictor "
                             f"reads tabular workdirs, score code runs with launch.py --config.phases=eval")
        tokenizer = tokenizer_from_spec(meta["tokenizer"])
        preprocessor = Preprocessor.from_dict(meta["preprocessor"])
        model = models.make_model(ml_collections.ConfigDict(meta["config"]["model"]), tokenizer)
        like = jax.eval_shape(lambda: models.init_params(model, preprocessor.num_features, tokenizer.length,
                                                         jax.random.key(0)))
        params, _ = ckpt.restore("best", like)
        return cls(model, params, tokenizer, preprocessor, method,
                   calibration.load(os.path.join(workdir, "eval", method)))

    # ----- raw decodes

    def features(self, num, cat=None) -> np.ndarray:
        """The model's float32 inputs [N, F] from raw numeric (and categorical) columns."""
        num = np.asarray(num, np.float64)
        if num.ndim != 2:
            raise GenreError(f"Predictor: num has shape {num.shape}; expected a 2-D array [rows, numeric features]")
        if len(num) == 0:
            raise GenreError("Predictor: no rows to predict")
        return self.preprocessor.transform_x(RawSplit(num, None if cat is None else np.asarray(cat, object),
                                                      np.zeros(len(num))))

    @staticmethod
    def _batched(fn, x: np.ndarray, batch_size: int, fixed: bool = False) -> list:
        """``fn(x_BF, i)`` over ``batch_size``-row batches, the last one padded (one compiled shape);
        each output trimmed back to the batch's real rows. ``fixed``: pad even a smaller input to
        ``batch_size`` rows, so a row's result does not depend on how many rows came with it."""
        batch, out = (batch_size if fixed else min(batch_size, len(x))), []
        for i, start in enumerate(range(0, len(x), batch)):
            rows = x[start:start + batch]
            padded = np.concatenate([rows, np.zeros((batch - len(rows), x.shape[1]), x.dtype)])
            out.append([np.asarray(o, np.float64)[:len(rows)] for o in fn(padded, i)])
        return [np.concatenate(parts) for parts in zip(*out)]

    def sample_z(self, num, cat=None, num_samples: int = 128, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(samples_NG, greedy_N) in z units, decoded ``batch_size`` rows at a time."""
        key = jax.random.key(seed)
        return tuple(self._batched(
            lambda x_BF, i: _predict_batch(self.model, self.params, x_BF, jax.random.fold_in(key, i), self.tokenizer,
                                           num_samples, np.float32(temperature)),
            self.features(num, cat), batch_size))

    def mean_z(self, num, cat=None, num_samples: int = 512, seed: int = 0, batch_size: int = 256) -> np.ndarray:
        """The predictive mean in z units: exact where the tokenizer allows at most 4,096 sequences
        (as evaluation's ``auto``; then a row's mean is the same bits in any batch, any order), else
        the mean of ``num_samples`` draws."""
        if exact.num_sequences(self.tokenizer) > EXACT_MAX_SEQUENCES:
            return self.sample_z(num, cat, num_samples, 1.0, seed, batch_size)[0].mean(1)
        values_S = np.asarray(self.tokenizer.decode(exact.all_sequences(self.tokenizer)), np.float64)
        probs, = self._batched(lambda x_BF, i: exact.predict(self.model, self.params, x_BF, self.tokenizer)[:1],
                               self.features(num, cat), batch_size, fixed=True)
        return probs @ values_S / probs.sum(1)

    def predict(self, num, cat=None, num_samples: int = 128, temperature: float = 1.0, seed: int = 0,
                batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Mean, median and greedy predictions (and all samples) in the target's original units."""
        samples_z, greedy_z = self.sample_z(num, cat, num_samples, temperature, seed, batch_size)
        samples = self.preprocessor.z_to_y(samples_z)
        return {"mean": samples.mean(-1), "median": np.median(samples, -1),
                "greedy": self.preprocessor.z_to_y(greedy_z), "samples": samples}

    # ----- calibrated uncertainty

    @property
    def calibrated_temperature(self) -> float | None:
        return (self.calibration or {}).get("temperature", {}).get("value")

    def quantiles(self, num, cat=None, q=(0.05, 0.5, 0.95), calibrated: bool = True, num_samples: int = 512,
                  seed: int = 0) -> np.ndarray:
        """[N, len(q)] quantiles of the predictive distribution (original units), from ``num_samples``
        draws at the calibrated temperature when the run fitted one (``calibrated``), else at 1."""
        q = np.atleast_1d(np.asarray(q, np.float64))
        if q.size == 0 or np.any((q < 0) | (q > 1)):
            raise GenreError(f"Predictor.quantiles: q must be in [0, 1], got {q.tolist()}")
        temperature = (self.calibrated_temperature if calibrated else None) or 1.0
        samples_z, _ = self.sample_z(num, cat, num_samples, temperature, seed)
        return self.preprocessor.z_to_y(np.quantile(samples_z, q, axis=1).T)

    def interval(self, num, cat=None, coverage: float = 0.9, kind: str = "conformal", num_samples: int = 512,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) in original units. ``conformal``: the predictive mean (``mean_z``, as the
        calibration used it) ± the split-conformal half-width fitted on the validation split (needs
        the run's calibration); ``temperature``: the central
        interval of the distribution at the calibrated temperature; ``raw``: at temperature 1."""
        if kind not in INTERVALS:
            raise GenreError(f"Predictor.interval: kind must be one of {list(INTERVALS)}, got {kind!r}")
        if not 0 < coverage < 1:
            raise GenreError(f"Predictor.interval: coverage must be in (0, 1), got {coverage}")
        if kind != "conformal":
            if kind == "temperature" and self.calibrated_temperature is None:
                raise GenreError(f"Predictor.interval: the {self.method} run has no temperature calibration; "
                                 f"evaluate with --config.eval.calibration=both, or use kind='raw'")
            bounds = self.quantiles(num, cat, ((1 - coverage) / 2, (1 + coverage) / 2), kind == "temperature",
                                    num_samples, seed)
            return bounds[:, 0], bounds[:, 1]
        half_z = self.conformal_half_width(coverage)
        mean_z = self.mean_z(num, cat, num_samples, seed)
        return self.preprocessor.z_to_y(mean_z - half_z), self.preprocessor.z_to_y(mean_z + half_z)

    def conformal_half_width(self, coverage: float) -> float:
        """The split-conformal half-width (z units) for ``coverage`` from the stored validation residuals."""
        conformal = (self.calibration or {}).get("conformal")
        if not conformal or "residuals_z" not in conformal:
            raise GenreError(f"Predictor.interval: the {self.method} run has no conformal calibration; evaluate "
                             f"with --config.eval.calibration=both (or conformal), or use kind='raw'")
        residuals = conformal["residuals_z"]
        half = calibration.conformal_half_width(residuals, coverage)
        if half is None:
            raise GenreError(f"Predictor.interval: {len(residuals)} validation rows cannot certify coverage "
                             f"{coverage}; at most {len(residuals) / (len(residuals) + 1):.3f}")
        return half
