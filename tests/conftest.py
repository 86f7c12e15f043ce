"""Runs every test on CPU with 8 fake host devices, so sharded code is really exercised."""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # launch.py and experiments/ live at the repository root


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


@pytest.fixture
def toy_data_dir(tmp_path):
    write_talent_dataset(tmp_path / "data")
    return tmp_path / "data"
