"""TALENT-format tabular regression data: reading and validating the folders, and loading a dataset
through the train-fitted preprocessing.

On-disk format (one folder per dataset, as in the LAMDA-TALENT benchmark):

* ``N_{train,val,test}.npy``: numeric features, float, shape [rows, n_num]; NaN = missing.
* ``C_{train,val,test}.npy``: optional categorical features, object arrays (usually str).
* ``y_{train,val,test}.npy``: regression target (any numeric dtype, [rows] or [rows, 1]).
* ``info.json``: optional metadata (TALENT keys such as ``task_type``, ``n_num_features``).

A split may have only N or only C files, but every split must have the same kinds.

Preprocessing (train-only statistics, the protocol of method.md §4) lives in ``preprocess.py``.

Getting the full 100-dataset TALENT regression benchmark: the repository bundles only ``cpu_act``.
The archive is published by the LAMDA-TALENT project (https://github.com/qile2000/LAMDA-TALENT),
whose README links the download; unzip it and pass the folder holding one sub-folder per dataset as
``--config.data_dir=/path/to/data --config.dataset=NAME``. Only datasets whose info.json says
``"task_type": "regression"`` are accepted. This module never touches the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
import sys

import numpy as np

from genre_jax.data.preprocess import Preprocessor, RawSplit
from genre_jax.errors import one_line_error as _error

BUNDLED_DIR: pathlib.Path = pathlib.Path(__file__).resolve().parents[2] / "datasets"
SPLITS = ("train", "val", "test")
_MAX_LISTED = 8


# --------------------------------------------------------------------------------------------
# Reading


def _resolve_root(data_dir: str | os.PathLike | None) -> pathlib.Path:
    if data_dir is None or str(data_dir) == "":
        return BUNDLED_DIR
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise _error(f"data_dir {root} is not an existing directory; expected a folder with one "
                     f"sub-folder per TALENT dataset")
    return root


def _available_datasets(root: pathlib.Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "y_train.npy").is_file())


def _dataset_folder(root: pathlib.Path, name: str) -> pathlib.Path:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name:
        raise _error(f"dataset name {name!r} is not a folder name; expected e.g. 'cpu_act'")
    folder = root / name
    if folder.is_dir():
        return folder
    available = _available_datasets(root)
    hint = ""
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        hint = f" Did you mean {close[0]!r}?"
    listed = ", ".join(available[:_MAX_LISTED]) or "none"
    if len(available) > _MAX_LISTED:
        listed += f", ... ({len(available)} in all)"
    raise _error(f"dataset folder {folder} not found; datasets available in {root}: {listed}.{hint}")


def _load_npy(path: pathlib.Path, allow_pickle: bool) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=allow_pickle)
    except Exception as exc:  # numpy raises many types for corrupt or non-.npy files
        raise _error(f"{path} could not be read as a .npy array ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):  # np.load reads by content, not by file name
        names = ", ".join(loaded.files) or "none"
        loaded.close()
        raise _error(f"{path} is an .npz archive (arrays: {names}); expected one array saved with np.save")
    if not isinstance(loaded, np.ndarray):
        raise _error(f"{path} holds a pickled {type(loaded).__name__}; expected one array saved with np.save")
    return loaded


def _read_num(path: pathlib.Path) -> np.ndarray:
    # TALENT's archive stores a few numeric arrays as dtype=object, which needs pickle.
    raw = _load_npy(path, allow_pickle=True)
    if raw.ndim != 2:
        raise _error(f"{path} has shape {raw.shape}; expected a 2-D array [rows, features]")
    try:
        num = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise _error(f"{path} has non-numeric values (dtype {raw.dtype}); expected float features "
                     f"with NaN for missing") from None
    n_inf = int(np.isinf(num).sum())
    if n_inf:
        raise _error(f"{path} has {n_inf} infinite values; expected finite numbers or NaN for missing")
    return num


def _read_cat(path: pathlib.Path) -> np.ndarray:
    raw = _load_npy(path, allow_pickle=True)
    if raw.ndim != 2:
        raise _error(f"{path} has shape {raw.shape}; expected a 2-D array [rows, features]")
    return raw.astype(object)


def _read_y(path: pathlib.Path) -> np.ndarray:
    raw = _load_npy(path, allow_pickle=True)
    if raw.ndim not in (1, 2) or (raw.ndim == 2 and raw.shape[1] != 1):
        raise _error(f"{path} has shape {raw.shape}; expected a target of shape [rows] or [rows, 1]")
    try:
        y = raw.astype(np.float64).ravel()
    except (TypeError, ValueError):
        raise _error(f"{path} has non-numeric values (dtype {raw.dtype}); expected a numeric "
                     f"regression target") from None
    n_bad = int((~np.isfinite(y)).sum())
    if n_bad:
        raise _error(f"{path} has {n_bad} non-finite target values (NaN or inf); expected all finite")
    return y


def _read_info(folder: pathlib.Path) -> dict:
    path = folder / "info.json"
    if not path.is_file():
        print(f"warning: {path} not found; assuming task_type 'regression' (TALENT's own loader requires "
              f"this file)", file=sys.stderr)
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise _error(f"{path} holds a {type(info).__name__}; expected a JSON object")
    task = info.get("task_type", "regression")
    if task != "regression":
        raise _error(f"{path} has task_type {task!r}; genre_jax only handles 'regression' datasets")
    return info


def _feature_kinds(folder: pathlib.Path) -> tuple[bool, bool]:
    """Which of N/C the dataset has; every split must agree so columns line up."""
    for split in SPLITS:
        y_path = folder / f"y_{split}.npy"
        if not y_path.is_file():
            raise _error(f"{y_path} not found; a TALENT dataset needs y_train.npy, y_val.npy and "
                         f"y_test.npy")
    kinds = []
    for prefix in ("N", "C"):
        present = [(folder / f"{prefix}_{s}.npy").is_file() for s in SPLITS]
        if any(present) and not all(present):
            have = SPLITS[present.index(True)]
            miss = SPLITS[present.index(False)]
            raise _error(f"{folder / f'{prefix}_{miss}.npy'} not found but {prefix}_{have}.npy "
                         f"exists; every split needs the same feature files")
        kinds.append(all(present))
    if not any(kinds):
        raise _error(f"{folder} has neither N_train.npy nor C_train.npy; expected at least one "
                     f"feature file per split")
    return kinds[0], kinds[1]


def _read_split(folder: pathlib.Path, split: str, has_num: bool, has_cat: bool) -> RawSplit:
    y_path = folder / f"y_{split}.npy"
    y = _read_y(y_path)
    n = y.shape[0]
    if has_num:
        num = _read_num(folder / f"N_{split}.npy")
    else:
        num = np.zeros((n, 0), np.float64)
    cat = _read_cat(folder / f"C_{split}.npy") if has_cat else None
    for prefix, arr in (("N", num if has_num else None), ("C", cat)):
        if arr is not None and arr.shape[0] != n:
            raise _error(f"{folder / f'{prefix}_{split}.npy'} has {arr.shape[0]} rows but "
                         f"{y_path.name} has {n}; expected one target per row")
    return RawSplit(num=num, cat=cat, y=y)


def _check_columns(folder: pathlib.Path, splits: dict[str, RawSplit]) -> None:
    train = splits["train"]
    for split in SPLITS[1:]:
        for prefix, field in (("N", "num"), ("C", "cat")):
            ref, arr = getattr(train, field), getattr(splits[split], field)
            if arr is not None and arr.shape[1] != ref.shape[1]:
                raise _error(f"{folder / f'{prefix}_{split}.npy'} has {arr.shape[1]} columns but "
                             f"{prefix}_train.npy has {ref.shape[1]}; every split must have the "
                             f"same features")
    n_features = train.num.shape[1] + (0 if train.cat is None else train.cat.shape[1])
    if n_features == 0:
        raise _error(f"{folder} has no feature columns in N_train.npy/C_train.npy; expected at least one")
    if train.num_rows < 2:
        raise _error(f"{folder / 'y_train.npy'} has {train.num_rows} rows; expected at least 2 train "
                     f"rows to fit the preprocessing")
    for split in SPLITS[1:]:
        if splits[split].num_rows < 1:
            raise _error(f"{folder / f'y_{split}.npy'} has no rows; expected at least 1 (used for early "
                         f"stopping and evaluation)")


def read_talent(data_dir: str | os.PathLike | None, name: str) -> tuple[dict[str, RawSplit], dict]:
    """Reads and validates ``<data_dir>/<name>/`` (data_dir None or '' -> BUNDLED_DIR).

    Returns ({split: RawSplit}, info.json dict; {} when info.json is absent). Raises GenreError
    naming the offending file for a missing folder or file, unreadable arrays, row counts that
    disagree within a split, column counts that disagree across splits, non-finite targets,
    fewer than 2 train rows, no features, or a non-regression info.json task_type.
    """
    root = _resolve_root(data_dir)
    folder = _dataset_folder(root, name)
    has_num, has_cat = _feature_kinds(folder)
    info = _read_info(folder)
    splits = {s: _read_split(folder, s, has_num, has_cat) for s in SPLITS}
    _check_columns(folder, splits)
    return splits, info


# --------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 [n, F]
    z: np.ndarray  # float32 [n], standardized target
    y: np.ndarray  # float64 [n], original units


@dataclasses.dataclass(frozen=True)
class TabularData:
    name: str
    splits: dict[str, Split]
    preprocessor: Preprocessor
    info: dict


def load_tabular(data_dir: str | os.PathLike | None, name: str) -> TabularData:
    """Reads a TALENT dataset, fits the preprocessor on train and transforms every split."""
    raw, info = read_talent(data_dir, name)
    folder = _resolve_root(data_dir) / name
    return _preprocessed(name, raw, info, lambda s, kind: str(folder / f"{kind}_{s}.npy"))


def from_splits(raw: dict[str, RawSplit], name: str = "arrays", info: dict | None = None) -> TabularData:
    """The in-memory way in (``pipeline.prepare(..., data=...)``, the estimator): ``raw`` maps
    "train", "val" and optionally "test" to ``RawSplit``s of arrays; the preprocessing is fitted on
    train exactly as for a TALENT folder, so the same arrays give the same numbers either way."""
    if not isinstance(raw, dict) or not {"train", "val"} <= set(raw) or not set(raw) <= set(SPLITS):
        raise _error(f"data splits: expected a dict with 'train', 'val' (and optionally 'test') RawSplits, got "
                     f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    def columns(part: RawSplit) -> tuple:
        return tuple(None if a is None or np.ndim(a) != 2 else a.shape[1] for a in (part.num, part.cat))

    for split, part in raw.items():
        if not isinstance(part, RawSplit):
            raise _error(f"data splits[{split!r}]: expected a RawSplit(num, cat, y), got {type(part).__name__}")
        if columns(part) != columns(raw["train"]):  # shapes beyond columns: the preprocessor's checks
            raise _error(f"data splits[{split!r}]: (numeric, categorical) columns {columns(part)} differ from the "
                         f"train split's {columns(raw['train'])}; every split needs the same features")
        least = 2 if split == "train" else 1
        if part.num_rows < least:
            raise _error(f"data splits[{split!r}]: has {part.num_rows} rows; expected at least {least}")
        n_bad = int((~np.isfinite(np.asarray(part.y, np.float64))).sum())
        if n_bad:
            raise _error(f"data splits[{split!r}].y has {n_bad} non-finite values (NaN or inf); expected all finite")
    return _preprocessed(name, raw, dict(info or {}), lambda s, kind: f"data splits[{s!r}].{'num' if kind == 'N' else 'y'}")


def _preprocessed(name: str, raw: dict[str, RawSplit], info: dict, where) -> TabularData:
    """Fits the preprocessor on train and transforms every split; ``where(split, "N"|"y")`` names a
    split's features or targets in messages."""
    pre = Preprocessor.fit(raw["train"])
    splits = {s: Split(x=pre.transform_x(r, where(s, "N")), z=pre.y_to_z(r.y, where(s, "y")), y=r.y)
              for s, r in raw.items()}
    return TabularData(name=name, splits=splits, preprocessor=pre, info=info)
