"""The run context: what every phase needs, built once by the pipeline and passed on whole."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from genre_jax.settings import Settings


@dataclasses.dataclass(frozen=True)
class RunContext:
    settings: Settings
    arrays: dict[str, dict[str, np.ndarray]]  # split -> {"x": x_NF, "tokens": tokens_NL, "z": z_N}
    y_std: float  # target units per z unit (train-split standardization)
    model: Any  # the encoder-decoder (flax module)
    tokenizer: Any
    model_config: dict  # config.model: the heads build the same encoder from it
    mesh: Any
    workdir: str
    meta: dict  # every best checkpoint carries it: model config, tokenizer spec, preprocessing
    data: Any = None  # the loaded dataset (splits + fitted preprocessing); LightGBM reads its raw splits
    profiler: Any = None  # runlog.StepProfiler when launch.py --profile asks for a trace
    progress: bool = True  # the loop's progress bars (launch.py --noprogress, the estimator's verbose)

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def num_features(self) -> int:
        return int(self.arrays["train"]["x"].shape[1])


def encode_splits(data, tokenizer) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Token-encodes every split; returns the arrays and how many targets each split clipped."""
    arrays, clipped = {}, {}
    for name, split in data.splits.items():
        tokens, clipped[name] = tokenizer.encode(split.z)
        arrays[name] = {"x": split.x, "tokens": tokens, "z": split.z.astype(np.float32)}
    return arrays, clipped
