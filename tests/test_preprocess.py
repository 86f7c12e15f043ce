"""Train-only preprocessing: the protocol on hand-made splits, state round trips and one-line errors."""

import json

import numpy as np
import pytest

from genre_jax.data import MISSING_CATEGORY, Preprocessor, RawSplit, load_tabular, read_talent
from genre_jax.errors import GenreError
import fakes


def test_fit_uses_train_only(tmp_path):
    root = fakes.numeric_talent_folder(tmp_path)
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
    raw, info = read_talent(fakes.categorical_talent_folder(tmp_path), "cats")
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
    raw, _ = read_talent(fakes.categorical_talent_folder(tmp_path), "cats")
    pre = Preprocessor.fit(raw["train"])
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre
    np.testing.assert_array_equal(back.transform_x(raw["val"]), pre.transform_x(raw["val"]))


def test_from_dict_rejects_bad_state(tmp_path):
    raw, _ = read_talent(fakes.categorical_talent_folder(tmp_path), "cats")
    state = Preprocessor.fit(raw["train"]).to_dict()
    del state["y_std"]
    with pytest.raises(GenreError, match="y_std") as excinfo:
        Preprocessor.from_dict(state)
    fakes.one_line_message(excinfo)
    state = Preprocessor.fit(raw["train"]).to_dict()
    state["cat_mode"] = [0]
    with pytest.raises(GenreError, match="cat_mode"):
        Preprocessor.from_dict(state)


def test_y_z_inverse(tmp_path):
    raw, _ = read_talent(fakes.numeric_talent_folder(tmp_path), "toy")
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
    raw, _ = read_talent(fakes.numeric_talent_folder(tmp_path), "toy")
    pre = Preprocessor.fit(raw["train"])
    with pytest.raises(GenreError, match="numeric") as excinfo:
        pre.transform_x(RawSplit(num=np.zeros((2, 4)), cat=None, y=np.zeros(2)))
    fakes.one_line_message(excinfo)
