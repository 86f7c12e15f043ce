"""Regression data: TALENT tabular folders (talent.py, preprocessed by preprocess.py) and code-metric
program files; ``load_for_config`` picks one."""
from genre_jax.errors import GenreError

from genre_jax.data.preprocess import MISSING_CATEGORY, Preprocessor, RawSplit
from genre_jax.data.talent import (
    BUNDLED_DIR,
    SPLITS,
    Split,
    TabularData,
    from_splits,
    load_tabular,
    read_talent,
)

__all__ = [
    "BUNDLED_DIR",
    "MISSING_CATEGORY",
    "SPLITS",
    "Preprocessor",
    "RawSplit",
    "Split",
    "TabularData",
    "from_splits",
    "load_tabular",
    "read_talent",
]

DATA_FORMATS = ("talent", "code_metrics")


def load_for_config(config):
    """The dataset a run config names: ``config.data_format`` talent (default) or code_metrics."""
    fmt = config.get("data_format", "talent")
    if fmt == "talent":
        return load_tabular(config.data_dir or None, config.dataset)
    if fmt == "code_metrics":
        from genre_jax.data.code_metrics import load_code_metrics
        return load_code_metrics(config.data_dir or None, config.dataset, config.code.target, config.code.max_bytes)
    raise GenreError(f"config.data_format: unknown format {fmt!r}; expected one of {list(DATA_FORMATS)}")
