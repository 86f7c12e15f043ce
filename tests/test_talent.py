"""TALENT reader and train-only preprocessing: protocol, round trips and one-line errors."""

import json
import pathlib

import numpy as np
import pytest

from genre_jax.data import (
    BUNDLED_DIR,
    MISSING_CATEGORY,
    SPLITS,
    Preprocessor,
    RawSplit,
    load_tabular,
    read_talent,
)
from genre_jax.errors import GenreError

SHARED_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets" / "talent"  # <repo>/../shared


def _write(folder: pathlib.Path, arrays: dict, info: dict | None = None) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        np.save(folder / fname, arr, allow_pickle=True)
    if info is not None:
        (folder / "info.json").write_text(json.dumps(info))
    return folder


def _numeric_dataset(tmp_path, name="toy", rows=(20, 6, 8), n_num=3, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(SPLITS, rows):
        arrays[f"N_{split}.npy"] = rng.normal(size=(n, n_num))
        arrays[f"y_{split}.npy"] = rng.normal(size=n)
    arrays.update(overrides)
    _write(tmp_path / name, arrays, {"task_type": "regression"})
    return tmp_path


def _cat_dataset(tmp_path, name="cats"):
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
    _write(tmp_path / name, arrays)  # no info.json: allowed
    return tmp_path


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# ---------------------------------------------------------------------------- preprocessing


def test_fit_uses_train_only(tmp_path):
    root = _numeric_dataset(tmp_path)
    raw, _ = read_talent(root, "toy")
    pre = Preprocessor.fit(raw["train"])
    wild = {s: RawSplit(num=raw[s].num * 1e6 + 1e3, cat=None, y=raw[s].y * 1e4) for s in ("val", "test")}
    folder = tmp_path / "toy"
    for split, r in wild.items():
        np.save(folder / f"N_{split}.npy", r.num)
        np.save(folder / f"y_{split}.npy", r.y)
    data = load_tabular(root, "toy")
    assert data.preprocessor == pre
    x_train = data.splits["train"].x
    assert x_train.dtype == np.float32
    np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x_train.std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(data.splits["train"].z.mean(), 0.0, atol=1e-6)
    assert data.splits["val"].z.dtype == np.float32 and data.splits["val"].y.dtype == np.float64


def test_nan_imputed_with_train_mean_and_constant_columns(tmp_path):
    train = RawSplit(
        num=np.array([[1.0, np.nan, 0.1], [3.0, np.nan, 0.1], [np.nan, np.nan, 0.1], [8.0, np.nan, 0.1]]),
        cat=None, y=np.array([0.0, 1.0, 2.0, 3.0]),
    )
    pre = Preprocessor.fit(train)
    assert pre.num_mean[0] == pytest.approx(4.0)
    assert pre.num_mean[1] == 0.0 and pre.num_std[1] == 1.0  # all-NaN train column
    assert pre.num_std[2] == 1.0  # constant column, even if np.std leaves a rounding residue
    other = RawSplit(num=np.array([[np.nan, np.nan, 5.0]]), cat=None, y=np.array([0.0]))
    x = pre.transform_x(other)
    assert x[0, 0] == 0.0 and x[0, 1] == 0.0  # imputed with the train mean -> 0 after scaling
    assert np.isfinite(x).all()


def test_categorical_missing_and_unseen(tmp_path):
    raw, info = read_talent(_cat_dataset(tmp_path), "cats")
    assert info == {}
    assert raw["test"].y.shape == (2,) and raw["train"].y.dtype == np.float64
    pre = Preprocessor.fit(raw["train"])
    assert pre.cat_categories[0] == tuple(sorted(["a", "b", MISSING_CATEGORY]))
    assert pre.cat_categories[1] == ("x", "y")
    col0, col1 = pre.cat_categories
    assert col0[pre.cat_mode[0]] == MISSING_CATEGORY  # 4 missing spellings beat 'b' (2)
    assert col1[pre.cat_mode[1]] == "x"
    assert pre.num_features == 3

    def codes(split):  # undo the standardization to read the ordinal codes back
        x = pre.transform_x(raw[split])[:, 1:].astype(np.float64)
        return np.rint(x * np.array(pre.cat_std) + np.array(pre.cat_mean)).astype(int)

    miss, x_code = col0.index(MISSING_CATEGORY), col1.index("x")
    np.testing.assert_array_equal(codes("val"), [[col0.index("a"), x_code], [miss, col1.index("y")]])
    np.testing.assert_array_equal(codes("test"), [[miss, x_code], [col0.index("b"), x_code]])
    x_train = pre.transform_x(raw["train"])
    np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x_train.std(0), 1.0, atol=1e-5)
    assert pre.num_mean[0] == pytest.approx(18.0 / 5)


def test_integer_categories_match_across_int_and_float():
    train = RawSplit(num=np.zeros((3, 0)), cat=np.array([[1], [2], [2]], dtype=object), y=np.arange(3.0))
    pre = Preprocessor.fit(train)
    assert pre.cat_categories == (("1", "2"),)
    x = pre.transform_x(RawSplit(num=np.zeros((2, 0)), cat=np.array([[1.0], [2.0]], dtype=object), y=np.zeros(2)))
    np.testing.assert_allclose(x, pre.transform_x(train)[:2])


def test_to_dict_round_trip_through_json(tmp_path):
    raw, _ = read_talent(_cat_dataset(tmp_path), "cats")
    pre = Preprocessor.fit(raw["train"])
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre
    np.testing.assert_array_equal(back.transform_x(raw["val"]), pre.transform_x(raw["val"]))


def test_from_dict_rejects_bad_state(tmp_path):
    raw, _ = read_talent(_cat_dataset(tmp_path), "cats")
    state = Preprocessor.fit(raw["train"]).to_dict()
    del state["y_std"]
    with pytest.raises(GenreError, match="y_std") as excinfo:
        Preprocessor.from_dict(state)
    _one_line_error(excinfo)
    state = Preprocessor.fit(raw["train"]).to_dict()
    state["cat_mode"] = [0]
    with pytest.raises(GenreError, match="cat_mode"):
        Preprocessor.from_dict(state)


def test_y_z_inverse(tmp_path):
    raw, _ = read_talent(_numeric_dataset(tmp_path), "toy")
    pre = Preprocessor.fit(raw["train"])
    y = raw["test"].y
    z = pre.y_to_z(y)
    assert z.dtype == np.float32
    back = pre.z_to_y(z)
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, y, rtol=1e-5, atol=1e-6)
    zz = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(pre.y_to_z(pre.z_to_y(zz)), zz, atol=1e-6)


def test_transform_rejects_wrong_columns(tmp_path):
    raw, _ = read_talent(_numeric_dataset(tmp_path), "toy")
    pre = Preprocessor.fit(raw["train"])
    with pytest.raises(GenreError, match="numeric") as excinfo:
        pre.transform_x(RawSplit(num=np.zeros((2, 4)), cat=None, y=np.zeros(2)))
    _one_line_error(excinfo)


# ---------------------------------------------------------------------------- read errors


def _expect_error(root, name, pattern):
    with pytest.raises(GenreError, match=pattern) as excinfo:
        read_talent(root, name)
    return _one_line_error(excinfo)


def test_missing_folder_lists_available(tmp_path):
    _numeric_dataset(tmp_path, name="toy")
    message = _expect_error(tmp_path, "tpy", r"tpy not found")
    assert "toy" in message and "Did you mean 'toy'" in message
    _expect_error(tmp_path / "nope", "toy", r"data_dir .*nope")


def test_missing_y_file(tmp_path):
    root = _numeric_dataset(tmp_path)
    (root / "toy" / "y_val.npy").unlink()
    _expect_error(root, "toy", r"y_val\.npy not found")


def test_missing_feature_file_in_one_split(tmp_path):
    root = _numeric_dataset(tmp_path)
    (root / "toy" / "N_test.npy").unlink()
    _expect_error(root, "toy", r"N_test\.npy not found")


def test_mismatched_row_counts(tmp_path):
    root = _numeric_dataset(tmp_path, y_val=np.zeros(5))
    _expect_error(root, "toy", r"N_val\.npy has 6 rows but y_val\.npy has 5")


def test_non_finite_target(tmp_path):
    y = np.zeros(8)
    y[[1, 4]] = [np.nan, np.inf]
    root = _numeric_dataset(tmp_path, y_test=y)
    _expect_error(root, "toy", r"y_test\.npy has 2 non-finite")


def test_constant_target(tmp_path):
    root = _numeric_dataset(tmp_path, y_train=np.full(20, 0.1))
    with pytest.raises(GenreError, match=r"train target y is constant") as excinfo:
        load_tabular(root, "toy")
    _one_line_error(excinfo)


def test_huge_values_are_standardized_or_named_never_misdiagnosed(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = rng.normal(size=20)
    y[3] = 1e300  # a sentinel among ordinary targets: its std overflows float64 unless scaled
    data = load_tabular(_numeric_dataset(tmp_path / "a", y_train=y), "toy")
    assert np.isfinite(data.splits["train"].z).all() and data.preprocessor.y_std > 1e298
    assert "1 value(s) more than 1e+06 median absolute deviations" in capsys.readouterr().err
    base = {s: rng.normal(size=n) for s, n in zip(SPLITS, (20, 6, 8))}
    data = load_tabular(_numeric_dataset(tmp_path / "b", **{f"y_{s}.npy": v * 1e200 for s, v in base.items()}),
                        "toy")  # finite, all huge: the plain variance would overflow
    np.testing.assert_allclose(data.splits["train"].z, (base["train"] - base["train"].mean()) / base["train"].std(),
                               rtol=1e-5, atol=1e-5)
    x = rng.normal(size=(20, 3))
    x[0, 1] = 1e300  # a train feature far outside float32: standardized, finite
    data = load_tabular(_numeric_dataset(tmp_path / "c", **{"N_train.npy": x}), "toy")
    assert np.isfinite(data.splits["train"].x).all()
    x_test = rng.normal(size=(8, 3))
    x_test[2, 2] = 1e300  # a test feature that no train statistic brings into float32
    with pytest.raises(GenreError, match=r"N_test\.npy: numeric feature column 2 has values outside float32") as e:
        load_tabular(_numeric_dataset(tmp_path / "d", **{"N_test.npy": x_test}), "toy")
    _one_line_error(e)


def test_an_npz_under_an_npy_name_is_named(tmp_path):
    root = _numeric_dataset(tmp_path)
    with open(root / "toy" / "y_train.npy", "wb") as f:
        np.savez(f, y=np.zeros(20))
    _expect_error(root, "toy", r"y_train\.npy is an \.npz archive \(arrays: y\); expected one array")


def test_a_missing_info_json_is_a_visible_assumption(tmp_path, capsys):
    root = _numeric_dataset(tmp_path)
    (root / "toy" / "info.json").unlink()
    read_talent(root, "toy")
    assert "info.json not found; assuming task_type 'regression'" in capsys.readouterr().err


def test_column_count_across_splits(tmp_path):
    root = _numeric_dataset(tmp_path, N_val=np.zeros((6, 2)))
    _expect_error(root, "toy", r"N_val\.npy has 2 columns but N_train\.npy has 3")


def test_other_bad_inputs(tmp_path):
    root = _numeric_dataset(tmp_path, N_train=np.zeros(20))
    _expect_error(root, "toy", r"N_train\.npy has shape \(20,\); expected a 2-D")
    root = _numeric_dataset(tmp_path / "b", rows=(1, 6, 8))
    _expect_error(root, "toy", r"y_train\.npy has 1 rows")
    root = _numeric_dataset(tmp_path / "c")
    (root / "toy" / "info.json").write_text("{not json")
    _expect_error(root, "toy", r"info\.json is not valid JSON")
    (root / "toy" / "info.json").write_text(json.dumps({"task_type": "binclass"}))
    _expect_error(root, "toy", r"info\.json has task_type 'binclass'")
    root = _numeric_dataset(tmp_path / "d", n_num=0)
    _expect_error(root, "toy", r"no feature columns")
    root = _numeric_dataset(tmp_path / "e")
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
