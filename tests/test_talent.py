"""TALENT reader: folder validation, one-line errors, and every shared dataset loading."""

import json
import pathlib

import numpy as np
import pytest

from genre_jax.data import BUNDLED_DIR, SPLITS, load_tabular, read_talent
from genre_jax.errors import GenreError

import fakes

SHARED_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets" / "talent"  # <repo>/../shared


# ---------------------------------------------------------------------------- read errors


def _expect_error(root, name, pattern):
    with pytest.raises(GenreError, match=pattern) as excinfo:
        read_talent(root, name)
    return fakes.one_line_message(excinfo)


def test_missing_folder_lists_available(tmp_path):
    fakes.numeric_talent_folder(tmp_path, name="toy")
    message = _expect_error(tmp_path, "tpy", r"tpy not found")
    assert "toy" in message and "Did you mean 'toy'" in message
    _expect_error(tmp_path / "nope", "toy", r"data_dir .*nope")


def test_missing_y_file(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path)
    (root / "toy" / "y_val.npy").unlink()
    _expect_error(root, "toy", r"y_val\.npy not found")


def test_missing_feature_file_in_one_split(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path)
    (root / "toy" / "N_test.npy").unlink()
    _expect_error(root, "toy", r"N_test\.npy not found")


def test_mismatched_row_counts(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path, y_val=np.zeros(5))
    _expect_error(root, "toy", r"N_val\.npy has 6 rows but y_val\.npy has 5")


def test_non_finite_target(tmp_path):
    y = np.zeros(8)
    y[[1, 4]] = [np.nan, np.inf]
    root = fakes.numeric_talent_folder(tmp_path, y_test=y)
    _expect_error(root, "toy", r"y_test\.npy has 2 non-finite")


def test_constant_target(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path, y_train=np.full(20, 0.1))
    with pytest.raises(GenreError, match=r"train target y is constant") as excinfo:
        load_tabular(root, "toy")
    fakes.one_line_message(excinfo)


def test_huge_values_are_standardized_or_named_never_misdiagnosed(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = rng.normal(size=20)
    y[3] = 1e300  # a sentinel among ordinary targets: its std overflows float64 unless scaled
    data = load_tabular(fakes.numeric_talent_folder(tmp_path / "a", y_train=y), "toy")
    assert np.isfinite(data.splits["train"].z).all() and data.preprocessor.y_std > 1e298
    assert "1 value(s) more than 1e+06 median absolute deviations" in capsys.readouterr().err
    base = {s: rng.normal(size=n) for s, n in zip(SPLITS, (20, 6, 8))}
    data = load_tabular(fakes.numeric_talent_folder(tmp_path / "b", **{f"y_{s}.npy": v * 1e200 for s, v in base.items()}),
                        "toy")  # finite, all huge: the plain variance would overflow
    np.testing.assert_allclose(data.splits["train"].z, (base["train"] - base["train"].mean()) / base["train"].std(),
                               rtol=1e-5, atol=1e-5)
    x = rng.normal(size=(20, 3))
    x[0, 1] = 1e300  # a train feature far outside float32: standardized, finite
    data = load_tabular(fakes.numeric_talent_folder(tmp_path / "c", **{"N_train.npy": x}), "toy")
    assert np.isfinite(data.splits["train"].x).all()
    x_test = rng.normal(size=(8, 3))
    x_test[2, 2] = 1e300  # a test feature that no train statistic brings into float32
    with pytest.raises(GenreError, match=r"N_test\.npy: numeric feature column 2 has values outside float32") as e:
        load_tabular(fakes.numeric_talent_folder(tmp_path / "d", **{"N_test.npy": x_test}), "toy")
    fakes.one_line_message(e)


def test_an_npz_under_an_npy_name_is_named(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path)
    with open(root / "toy" / "y_train.npy", "wb") as f:
        np.savez(f, y=np.zeros(20))
    _expect_error(root, "toy", r"y_train\.npy is an \.npz archive \(arrays: y\); expected one array")


def test_a_missing_info_json_is_a_visible_assumption(tmp_path, capsys):
    root = fakes.numeric_talent_folder(tmp_path)
    (root / "toy" / "info.json").unlink()
    read_talent(root, "toy")
    assert "info.json not found; assuming task_type 'regression'" in capsys.readouterr().err


def test_column_count_across_splits(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path, N_val=np.zeros((6, 2)))
    _expect_error(root, "toy", r"N_val\.npy has 2 columns but N_train\.npy has 3")


def test_other_bad_inputs(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path, N_train=np.zeros(20))
    _expect_error(root, "toy", r"N_train\.npy has shape \(20,\); expected a 2-D")
    root = fakes.numeric_talent_folder(tmp_path / "b", rows=(1, 6, 8))
    _expect_error(root, "toy", r"y_train\.npy has 1 rows")
    root = fakes.numeric_talent_folder(tmp_path / "c")
    (root / "toy" / "info.json").write_text("{not json")
    _expect_error(root, "toy", r"info\.json is not valid JSON")
    (root / "toy" / "info.json").write_text(json.dumps({"task_type": "binclass"}))
    _expect_error(root, "toy", r"info\.json has task_type 'binclass'")
    root = fakes.numeric_talent_folder(tmp_path / "d", n_num=0)
    _expect_error(root, "toy", r"no feature columns")
    root = fakes.numeric_talent_folder(tmp_path / "e")
    (root / "toy" / "y_train.npy").write_bytes(b"garbage")
    _expect_error(root, "toy", r"y_train\.npy could not be read")


# ---------------------------------------------------------------------------- real data


def test_bundled_cpu_act():
    assert BUNDLED_DIR.is_absolute() and (BUNDLED_DIR / "cpu_act").is_dir()
    data = load_tabular(None, "cpu_act")
    assert data.name == "cpu_act" and data.info["name"] == "cpu_act"
    sizes = {s: data.splits[s].x.shape for s in SPLITS}
    assert sizes == {"train": (5242, 21), "val": (1311, 21), "test": (1639, 21)}
    assert data.preprocessor.num_features == 21
    for split in data.splits.values():
        assert np.isfinite(split.x).all() and split.z.shape == split.y.shape
    assert load_tabular("", "cpu_act").preprocessor == data.preprocessor


@pytest.mark.skipif(not SHARED_DIR.is_dir(), reason=f"no shared TALENT datasets at {SHARED_DIR}")
def test_all_shared_datasets_load():
    names = sorted(p.name for p in SHARED_DIR.iterdir() if (p / "y_train.npy").is_file())
    assert names
    for name in names:
        data = load_tabular(SHARED_DIR, name)
        n_features = data.preprocessor.num_features
        for split_name, split in data.splits.items():
            n = data.info.get(f"{split_name}_size", split.x.shape[0])
            assert split.x.shape == (n, n_features), name
            assert split.z.shape == split.y.shape == (n,), name
            assert np.isfinite(split.x).all() and np.isfinite(split.z).all(), name


def test_empty_val_split_is_a_one_line_error(tmp_path):
    from fakes import write_talent_dataset
    folder = write_talent_dataset(tmp_path, "emptyval")
    np.save(folder / "N_val.npy", np.zeros((0, 4)))
    np.save(folder / "C_val.npy", np.zeros((0, 1), dtype=object), allow_pickle=True)
    np.save(folder / "y_val.npy", np.zeros(0))
    with pytest.raises(GenreError, match="y_val.npy has no rows") as err:
        read_talent(tmp_path, "emptyval")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- in memory


def test_from_splits_is_the_folder_without_the_folder(toy_data_dir):
    """The same arrays in memory and as a TALENT folder: the same features, targets and preprocessing."""
    from genre_jax.data import from_splits
    raw, _ = read_talent(toy_data_dir, "toy")
    folder, memory = load_tabular(toy_data_dir, "toy"), from_splits(raw, "toy")
    assert memory.preprocessor.to_dict() == folder.preprocessor.to_dict()
    for split in SPLITS:
        for field in ("x", "z", "y"):
            np.testing.assert_array_equal(getattr(memory.splits[split], field), getattr(folder.splits[split], field))
    assert set(from_splits({s: raw[s] for s in ("train", "val")}).splits) == {"train", "val"}  # no test split needed


def test_from_splits_bad_inputs_are_one_line_errors_naming_the_split(toy_data_dir):
    from genre_jax.data import RawSplit, from_splits
    raw, _ = read_talent(toy_data_dir, "toy")
    val, train = raw["val"], raw["train"]
    cases = [
        ({"train": train}, "expected a dict with 'train', 'val'"),
        ({"train": train, "val": (val.num, val.y)}, r"splits\['val'\]: expected a RawSplit"),
        ({"train": train, "val": RawSplit(val.num[:, :1], val.cat, val.y)}, r"splits\['val'\].*differ from the train"),
        ({"train": RawSplit(train.num[:1], None, train.y[:1]), "val": val}, r"splits\['train'\]: has 1 rows"),
        ({"train": train, "val": RawSplit(val.num, val.cat, np.r_[val.y[:-1], np.inf])},
         r"splits\['val'\]\.y has 1 non-finite"),
    ]
    for splits, pattern in cases:
        with pytest.raises(GenreError, match=pattern) as excinfo:
            from_splits(splits)
        fakes.one_line_message(excinfo)
