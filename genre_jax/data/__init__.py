"""Tabular regression data in TALENT format: reading, train-only preprocessing, loading."""

from genre_jax.data.talent import (
    BUNDLED_DIR,
    MISSING_CATEGORY,
    SPLITS,
    Preprocessor,
    RawSplit,
    Split,
    TabularData,
    load_tabular,
    read_talent,
    talent_archive_path_help,
)

__all__ = [
    "BUNDLED_DIR",
    "MISSING_CATEGORY",
    "SPLITS",
    "Preprocessor",
    "RawSplit",
    "Split",
    "TabularData",
    "load_tabular",
    "read_talent",
    "talent_archive_path_help",
]
