"""Predict from a workdir alone: the best checkpoint's meta holds the model config, the tokenizer
spec, the fitted preprocessing and the evaluation settings, so raw TALENT-style features go in and
original units come out, decoded the way the run's evaluation decoded (``decode.py``: exactly where
the tokenizer is small and ``eval.decode`` is auto or exact, else ``eval.num_samples`` draws).

``Predictor.from_workdir(W)`` loads the decoder method the run trained last (GenRe² for the default
job; CE for a CE-only run), or ``method=``. ``predict(num, cat, output_type=)`` answers mean, median,
mode, greedy, quantiles, full (the whole distribution) or main (decode.OUTPUT_TYPES). Quantiles and
intervals use the run's calibration where evaluation fitted one (``eval/<method>/calibration.json``):
the temperature chosen on the validation split, and split-conformal intervals around the mean of the
predictor the residuals were measured on (the decoding the calibration file records).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from genre_jax import calibration, decode, exact, methods, models, parallel, paths, scores
from genre_jax.checkpoint import CHECKSUMS, PhaseCheckpoints
from genre_jax.data import Preprocessor, RawSplit
from genre_jax.errors import GenreError
from genre_jax.tokenizers import tokenizer_from_spec

INTERVALS = ("conformal", "temperature", "raw")


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
    eval_section: dict = dataclasses.field(default_factory=dict)  # the run's config.eval (how it decoded)

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
                   calibration.load(os.path.join(workdir, "eval", method)), dict(meta["config"].get("eval") or {}))

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

    def decoding(self, how: str | None = None, num_samples: int | None = None,
                 temperature: float | None = None) -> decode.Decoding:
        """The run's evaluation decoding (``decode.from_eval_section``), with any of its fields replaced."""
        run = decode.from_eval_section(self.eval_section, self.tokenizer)
        if how is not None:
            run = decode.resolve(how, self.tokenizer, run.num_samples, run.temperature,
                                 self.eval_section.get("exact_max_sequences", exact.MAX_SEQUENCES))
        return decode.Decoding(run.how, int(num_samples or run.num_samples),
                               float(run.temperature if temperature is None else temperature))

    def distribution(self, num, cat=None, decoding: decode.Decoding | None = None, seed: int = 0, key=None):
        """(the predictive distribution in z units, a ``scores.Discrete`` or ``scores.Samples``; the
        greedy decode_N in z units) of every row, ``decoding`` (the run's by default) in fixed-size
        batches over this host's devices (one compiled shape; an exact row's numbers do not depend on
        the rows that came with it). ``key``, a PRNG key in place of ``seed``, reproduces an
        evaluation's draws (``evaluate.split_key``)."""
        decoding = decoding or self.decoding()
        x_NF = self.features(num, cat)
        mesh = parallel.data_mesh()
        batch_size = parallel.round_up(int(self.eval_section.get("batch_size", 256)), mesh.size)
        fn = decode.predict_fn(self.model, self.tokenizer, mesh, decoding.how, decoding.num_samples)
        key = jax.random.key(seed) if key is None else key
        outputs, greedy_z = decode.decode_rows(fn, self.params, x_NF, key, batch_size, mesh,
                                               decoding.temperature)
        values_S = decode.support_z(self.tokenizer) if decoding.how == "exact" else None
        return decode.distribution(outputs, values_S), greedy_z

    def predict(self, num, cat=None, output_type: str = "mean", quantiles=decode.DEFAULT_QUANTILES,
                num_samples: int | None = None, temperature: float | None = None, seed: int = 0,
                decode_as: str | None = None):
        """``output_type`` (``decode.output``: mean | median | mode | greedy [N]; quantiles, a list of [N]
        per level; full, the whole distribution; main, a dict of the point predictions and [N, P]
        quantiles) in the target's original units, from the run's decoding (``decode_as``: exact |
        sample | auto instead; ``num_samples`` and ``temperature`` replace the run's). ``full`` decodes
        exactly wherever the tokenizer allows (``auto``) unless ``decode_as`` says otherwise."""
        if output_type not in decode.OUTPUT_TYPES:  # before any decoding
            raise GenreError(f"Predictor.predict: output_type must be one of {list(decode.OUTPUT_TYPES)}, got "
                             f"{output_type!r}")
        if output_type in ("quantiles", "main"):
            decode.check_levels(quantiles, "Predictor.predict")
        if output_type == "full" and decode_as is None:
            decode_as = "auto"  # the whole distribution: exact wherever the tokenizer allows, whatever evaluation did
        dist, greedy_z = self.distribution(num, cat, self.decoding(decode_as, num_samples, temperature), seed)
        return decode.output(dist, greedy_z, output_type, quantiles, self.preprocessor.z_to_y)

    def sample(self, num, cat=None, num_samples: int = 128, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
        """[N, num_samples] draws of the predictive distribution (original units): drawn from the exact
        distribution (inverse CDF) where the run decodes exactly, else by the sampler."""
        decoding = self.decoding(num_samples=num_samples, temperature=temperature)
        dist, _ = self.distribution(num, cat, decoding, seed)
        if decoding.how == "exact":
            return self.preprocessor.z_to_y(dist.sample(np.random.default_rng(seed), num_samples))
        return self.preprocessor.z_to_y(dist.samples_NG)

    # ----- calibrated uncertainty

    @property
    def calibrated_temperature(self) -> float | None:
        return (self.calibration or {}).get("temperature", {}).get("value")

    def quantiles(self, num, cat=None, q=(0.05, 0.5, 0.95), calibrated: bool = True, num_samples: int | None = None,
                  seed: int = 0) -> np.ndarray:
        """[N, len(q)] quantiles of the predictive distribution (original units), at the calibrated
        temperature when the run fitted one (``calibrated``), else at the run's evaluation temperature."""
        q = decode.check_levels(q, "Predictor.quantiles")
        temperature = (self.calibrated_temperature if calibrated else None)
        dist, _ = self.distribution(num, cat, self.decoding(num_samples=num_samples, temperature=temperature), seed)
        return self.preprocessor.z_to_y(decode.quantiles(dist, q))

    def interval(self, num, cat=None, coverage: float = 0.9, kind: str = "conformal", num_samples: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) in original units. ``conformal``: the mean ± the split-conformal half-width
        fitted on the validation split, the mean decoded as it was when the residuals were measured
        (``conformal_decoding``; needs the run's calibration); ``temperature``: the central interval of
        the distribution at the calibrated temperature; ``raw``: at the run's evaluation temperature."""
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
        dist, _ = self.distribution(num, cat, self.conformal_decoding(), seed)
        mean_z = dist.mean()
        return self.preprocessor.z_to_y(mean_z - half_z), self.preprocessor.z_to_y(mean_z + half_z)

    def conformal_decoding(self) -> decode.Decoding:
        """How the mean the conformal residuals are of was decoded: recorded in the calibration file
        (runs evaluated before it was, the run's evaluation settings, which made it)."""
        recorded = ((self.calibration or {}).get("conformal") or {}).get("decoding")
        if recorded is None:
            return self.decoding()
        return decode.Decoding.from_dict(recorded)

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
