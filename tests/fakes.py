"""Synthetic inputs the tests write to disk (TALENT-format dataset folders, measured-program rows),
a fake bucket (``gs://bucket`` served from a local folder), and the library's samplers compiled
whole for tests that call them directly (run eagerly, each of their ops would compile on its own:
seconds per call)."""
import contextlib
import gzip
import json
import os
import pathlib

import jax
import numpy as np

from genre_jax import sampling
from genre_jax.data import SPLITS

sample = jax.jit(sampling.sample, static_argnums=(0, 4, 5, 6), static_argnames="greedy")
predict = jax.jit(sampling.predict, static_argnums=(0, 4, 5, 6))
rollout_logits = jax.jit(sampling.rollout_logits, static_argnums=(0, 4), static_argnames="masked")
sequence_logprobs = jax.jit(sampling.sequence_logprobs, static_argnums=(0, 4))
teacher_forced_logits = jax.jit(sampling.teacher_forced_logits, static_argnums=(0, 4, 5))


def write_talent_dataset(root: pathlib.Path, name: str = "toy", n: int = 300, seed: int = 0) -> pathlib.Path:
    """A small TALENT-format folder: 4 numeric features (one with NaNs), 1 categorical, smooth target."""
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, 4))
    cat = rng.choice(["a", "b", "c"], size=(n, 1)).astype(object)
    y = num[:, 0] * 2 + np.sin(num[:, 1]) + (cat[:, 0] == "b") + 0.1 * rng.normal(size=n)
    num[rng.random(n) < 0.05, 3] = np.nan
    folder = root / name
    folder.mkdir(parents=True)
    cuts = {"train": slice(0, int(0.64 * n)), "val": slice(int(0.64 * n), int(0.8 * n)), "test": slice(int(0.8 * n), n)}
    for split, sl in cuts.items():
        np.save(folder / f"N_{split}.npy", num[sl])
        np.save(folder / f"C_{split}.npy", cat[sl], allow_pickle=True)
        np.save(folder / f"y_{split}.npy", y[sl])
    (folder / "info.json").write_text(json.dumps({"name": name, "task_type": "regression"}))
    return folder


def write_code_rows(path, n=120, seed=0, hub=False):
    """Synthetic measured programs: memory grows with the loop size written in the source."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        size = int(rng.integers(1, 1000))
        source = f"def test_{i}(self):\n    data = [0] * {size}\n    self.assertTrue(data)\n"
        memory, time_s = 100.0 + 8 * size * rng.uniform(0.9, 1.1), 1e-4 * rng.uniform(1, 3)
        if hub:
            rows.append({"identifier": f"APPS_{i}", "space": "APPS", "input": source, "target_metric": "val_accuracy",
                         "val_accuracy": memory, "metric_type": "memory_bytes",
                         "metadata": str({"problem_id": i // 3, "language": "python"})})
        else:
            rows.append({"id": f"test.mod.Case.test_{i}", "source": source, "file": f"test/file_{i // 4}.py",
                         "wall_time_s": time_s, "peak_memory_bytes": memory, "status": "ok"})
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


class FakeBucket:
    """``gs://bucket/...`` served from the local folder ``root``: the library's remote code path
    (``etils.epath``) runs for real, its file-system calls land on local files. ``calls`` lists
    (operation, path, ...) for every call epath made, so a test can tell which paths went remote
    and how a file was written. A POSIX folder is not an object store: what the fake shows is that
    the bucket path is used as a URI end to end, not how GCS or S3 behave."""

    URI = "gs://bucket"

    def __init__(self, root):
        self.root, self.calls = pathlib.Path(root), []

    def local(self, path) -> str:
        path = os.fspath(path)
        return str(self.root) + path[len(self.URI):] if path.startswith(self.URI) else path

    def uri(self, path) -> str:
        path = os.fspath(path)
        return self.URI + path[len(str(self.root)):] if path.startswith(str(self.root)) else path

    def ops(self, op: str) -> list:
        return [c[1:] for c in self.calls if c[0] == op]


@contextlib.contextmanager
def fake_bucket(root):
    from etils.epath.testing import mock_epath

    bucket = FakeBucket(root)

    def one(fn, path, *args, **kwargs):
        bucket.calls.append((fn.__name__, os.fspath(path), *args))
        return fn(bucket.local(path), *args, **kwargs)

    def two(fn, src, dst, **kwargs):
        bucket.calls.append((fn.__name__, os.fspath(src), os.fspath(dst)))
        return fn(bucket.local(src), bucket.local(dst), **kwargs)

    def walk(fn, top, **kwargs):
        bucket.calls.append(("walk", os.fspath(top)))
        for root_, dirs, files in fn(bucket.local(top), **kwargs):
            yield bucket.uri(root_), dirs, files

    def glob(fn, pattern):
        bucket.calls.append(("glob", os.fspath(pattern)))
        return [bucket.uri(p) for p in fn(bucket.local(pattern))]

    with mock_epath(copy=two, exists=one, glob=glob, isdir=one, listdir=one, makedirs=one, mkdir=one, open=one,
                    remove=one, rename=two, replace=two, rmtree=one, stat=one, walk=walk):
        yield bucket


def write_arrays(folder: pathlib.Path, arrays: dict, info: dict | None = None) -> pathlib.Path:
    """Each array saved under its file name in folder, and info.json when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        np.save(folder / fname, arr, allow_pickle=True)
    if info is not None:
        (folder / "info.json").write_text(json.dumps(info))
    return folder


def numeric_talent_folder(tmp_path, name="toy", rows=(20, 6, 8), n_num=3, seed=0, **overrides):
    """<tmp_path>/<name>: random numeric splits of the given row counts; overrides replace files by name."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(SPLITS, rows):
        arrays[f"N_{split}.npy"] = rng.normal(size=(n, n_num))
        arrays[f"y_{split}.npy"] = rng.normal(size=n)
    arrays.update(overrides)
    write_arrays(tmp_path / name, arrays, {"task_type": "regression"})
    return tmp_path


def categorical_talent_folder(tmp_path, name="cats"):
    """<tmp_path>/<name>: one numeric and two categorical columns, no info.json."""
    # Column 0 has missing spellings; column 1 has a val/test category never seen in train.
    c_train = np.array(
        [["b", "x"], ["a", "x"], [None, "y"], ["b", "x"], [np.nan, "y"], ["", "x"], ["NaN", "x"]],
        dtype=object,
    )
    c_val = np.array([["a", "zzz"], ["None", "y"]], dtype=object)
    c_test = np.array([["c", "x"], ["b", "w"]], dtype=object)
    arrays = {
        "N_train.npy": np.array([[1.0], [np.nan], [3.0], [5.0], [np.nan], [7.0], [2.0]]),
        "N_val.npy": np.array([[np.nan], [100.0]]),
        "N_test.npy": np.array([[0.0], [np.nan]]),
        "C_train.npy": c_train, "C_val.npy": c_val, "C_test.npy": c_test,
        "y_train.npy": np.arange(7, dtype=np.int64), "y_val.npy": np.array([1, 2]),
        "y_test.npy": np.array([[3.0], [4.0]]),  # (n, 1) like auction_verification
    }
    write_arrays(tmp_path / name, arrays)  # no info.json: allowed
    return tmp_path


def one_line_message(excinfo) -> str:
    """The raised error's message, checked to be one non-empty line."""
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def claim_row(dataset, seed, protocol, method, r2, rmse, cov=0.8, crps=0.2, status="ok"):
    """A claim study's row (experiments/claims.py) with the fields its reports read."""
    return {"dataset": dataset, "seed": seed, "protocol": protocol, "method": method, "status": status,
            "workdir": "", "selection": {"best_epoch": 3},
            "test": {"mean": {"r2": r2, "rmse": rmse}, "distribution": {"coverage_90": cov, "crps": crps}},
            "calibration": {"temperature": {"value": 2.0, "splits": {"test": {"coverage": {"0.9": 0.88},
                                                                              "crps": crps - 0.01}}},
                            "conformal": {"splits": {"test": {"coverage": {"0.9": 0.9}}}}}}
