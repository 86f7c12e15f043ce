"""Predict from a workdir alone: the best checkpoint's meta holds the model config, the tokenizer
spec and the fitted preprocessing, so raw TALENT-style features go in and original units come out."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from genre_jax import methods, models, sampling
from genre_jax.checkpoint import PhaseCheckpoints
from genre_jax.data import Preprocessor, RawSplit
from genre_jax.errors import GenreError
from genre_jax.tokenizers import tokenizer_from_spec


@dataclasses.dataclass
class Predictor:
    model: Any
    params: Any
    tokenizer: Any
    preprocessor: Preprocessor

    @classmethod
    def from_workdir(cls, workdir: str, method: str = methods.BASELINE) -> "Predictor":
        """The best checkpoint of a decoder ``method`` (any name in ``methods.NAMES`` that samples the
        number decoder: ce, an RL or a token-level method) in ``workdir``."""
        spec = methods.get(method, field="Predictor.from_workdir method")
        if not spec.decoder:
            raise GenreError(f"Predictor.from_workdir: {method!r} is a {spec.kind} method; the Predictor reads "
                             f"number-decoder checkpoints (ce, RL and token-level methods)")
        path = os.path.join(workdir, spec.folder)
        ckpt = PhaseCheckpoints(workdir, spec.folder) if os.path.isdir(path) else None
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
        return cls(model, params, tokenizer, preprocessor)

    def predict(self, num: np.ndarray, cat: np.ndarray | None = None, num_samples: int = 128,
                temperature: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
        """Mean, median and greedy predictions (and all samples) in the target's original units."""
        x = self.preprocessor.transform_x(RawSplit(np.asarray(num, np.float64), cat, np.zeros(len(num))))
        samples_z, greedy_z = jax.jit(sampling.predict, static_argnums=(0, 4, 5, 6))(
            self.model, self.params, x, jax.random.key(seed), self.tokenizer, num_samples, temperature)
        samples = self.preprocessor.z_to_y(np.asarray(samples_z, np.float64))
        return {"mean": samples.mean(-1), "median": np.median(samples, -1),
                "greedy": self.preprocessor.z_to_y(np.asarray(greedy_z, np.float64)), "samples": samples}
