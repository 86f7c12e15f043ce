"""Predict from a workdir alone: the best checkpoint's meta holds the model config, the tokenizer
spec and the fitted preprocessing, so raw TALENT-style features go in and original units come out."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from genre_jax import models, sampling
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
    def from_workdir(cls, workdir: str, phase: str = "ce") -> "Predictor":
        ckpt = PhaseCheckpoints(workdir, phase)
        meta = ckpt.meta("best") if os.path.isdir(ckpt.root) else None
        if meta is None:
            raise GenreError(f"{os.path.join(workdir, phase)}: no best checkpoint; train the {phase} phase first")
        if not isinstance(meta.get("preprocessor"), dict):
            raise GenreError(f"{os.path.join(workdir, phase)}: checkpoint meta lacks the preprocessor; "
                             f"expected a checkpoint written by launch.py")
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
