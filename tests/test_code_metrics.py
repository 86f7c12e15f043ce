"""Code-metric data: both row layouts, grouped splits, TFDS array_record round trip, target transform."""
import gzip
import json

import numpy as np
import pytest
import scipy.stats

from genre_jax.data import code_metrics as cm
from genre_jax.errors import GenreError
from fakes import write_code_rows as write_rows


def test_read_rows_both_layouts(tmp_path):
    write_rows(tmp_path / "ours.jsonl.gz")
    write_rows(tmp_path / "hub.jsonl", hub=True)
    ours, hub = cm.read_rows(str(tmp_path / "ours.jsonl.gz")), cm.read_rows(str(tmp_path / "hub.jsonl"))
    assert ours[5]["group"] == "test/file_1.py" and ours[5]["wall_time_s"] > 0
    assert hub[5]["group"] == "APPS/1" and np.isnan(hub[5]["wall_time_s"]) and hub[5]["peak_memory_bytes"] > 100
    for rows, key in ((ours, "group"), (hub, "group")):
        by_group = {}
        for r in rows:
            by_group.setdefault(r[key], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_group.values())  # a group never straddles splits
    latency = cm.normalize_row({"identifier": "KBSS_1", "input": "x", "val_accuracy": 2.5, "metric_type": "latency_ms"},
                               "here")
    assert latency["wall_time_s"] == pytest.approx(2.5e-3) and latency["group"] == "KBSS_1"


def test_split_of_is_deterministic_and_roughly_80_10_10():
    splits = [cm.split_of(f"file_{i}.py") for i in range(5000)]
    assert splits == [cm.split_of(f"file_{i}.py") for i in range(5000)]
    frac = {s: splits.count(s) / 5000 for s in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["val"] - 0.1) < 0.02 and abs(frac["test"] - 0.1) < 0.02


@pytest.mark.parametrize("content, message", [
    ("not json\n", "not valid JSON"),
    ('{"foo": 1}\n', "expected either id/source/file"),
    ('{"id": "a", "source": 3}\n', "non-string program"),
    ("", "no rows"),
    ("[1, 2]\n", "not a JSON object"),
    ('{"id": "a", "source": "x", "wall_time_s": "fast"}\n', "non-numeric wall_time_s"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(GenreError, match=message):
        cm.read_rows(str(tmp_path / "bad.jsonl"))
    with pytest.raises(GenreError, match="no such file"):
        cm.read_rows(str(tmp_path / "missing.jsonl"))


def test_quantile_normal_round_trip_and_normality():
    y = np.exp(np.random.default_rng(0).normal(3, 2, size=4000))
    q = cm.QuantileNormal.fit(y, num_features=8)
    z = q.y_to_z(y)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.03 and scipy.stats.spearmanr(y, z).statistic > 0.9999
    inside = np.abs(z) < np.abs(z).max()  # the extremes sit on the clipped CDF ends
    assert inside.sum() >= 3990 and np.allclose(q.z_to_y(z[inside]), y[inside], rtol=1e-3)
    assert np.isfinite(q.y_to_z(np.array([1e-30, 1e30]))).all()  # outside the train range: clipped, finite
    ties = cm.QuantileNormal.fit(np.array([1.0] * 50 + [2.0] * 50), 8)
    # A tie block takes the middle of its CDF range. np.quantile (p = i / (n - 1)) puts the 50 ones of
    # 100 at p <= 49/99, read on the 1,001-point grid (steps of 1/1000): their middle lies within half a
    # step below 49/198 (not 0.25, 0.009 away in z), and the twos' mirrors it.
    low, high = scipy.stats.norm.ppf([49 / 198 - 0.5e-3, 49 / 198])
    z_one, z_two = ties.y_to_z(np.array([1.0, 2.0]))
    assert low <= z_one <= high and -high <= z_two <= -low
    with pytest.raises(GenreError, match="constant"):
        cm.QuantileNormal.fit(np.ones(10), 8)


def test_byte_tokens_pad_and_truncate():
    tokens, truncated = cm.byte_tokens(["ab", "é", "x" * 10], 4)
    assert tokens.tolist() == [[98, 99, 0, 0], [196, 170, 0, 0], [121] * 4] and truncated == 1


def test_load_through_tfds_skips_unmeasured_rows(tmp_path):
    rows = write_rows(tmp_path / "progs.jsonl.gz", n=200)
    with gzip.open(tmp_path / "progs.jsonl.gz", "at") as f:  # never kept: empty program, missing target
        f.write(json.dumps({**rows[0], "id": "empty", "source": "  \n"}) + "\n")
        f.write(json.dumps({**rows[1], "id": "unmeasured", "peak_memory_bytes": None}) + "\n")
    data = cm.load_code_metrics(str(tmp_path), "progs", "memory", max_bytes=64, tfds_dir=str(tmp_path / "tfds"))
    assert sum(data.info["rows"].values()) == 200 and sum(data.info["skipped_rows"].values()) == 2
    assert (tmp_path / "tfds" / "code_metrics").is_dir()  # written as a TFDS array_record dataset
    sizes = {s: len(data.splits[s].z) for s in ("train", "val", "test")}
    assert min(sizes.values()) > 0 and sizes["train"] > sizes["val"]
    train = data.splits["train"]
    assert train.x.dtype == np.int32 and train.x.shape[1] == 64 and data.preprocessor.num_features == 64
    assert scipy.stats.spearmanr(data.preprocessor.z_to_y(train.z), train.y).statistic > 0.999
    again = cm.load_code_metrics(str(tmp_path), "progs", "peak_memory_bytes", 64, tfds_dir=str(tmp_path / "tfds"))
    assert np.array_equal(again.splits["test"].y, data.splits["test"].y)  # same splits on every load
    with pytest.raises(GenreError, match="config.code.target"):
        cm.load_code_metrics(str(tmp_path), "progs", "energy", 64, tfds_dir=str(tmp_path / "tfds"))
    with pytest.raises(GenreError, match="no such file"):
        cm.load_code_metrics(str(tmp_path), "nothing", "memory", 64, tfds_dir=str(tmp_path / "tfds"))


def test_hub_layout_loads(tmp_path):
    write_rows(tmp_path / "apps.jsonl", n=150, hub=True)
    data = cm.load_code_metrics(str(tmp_path), "apps", "memory", max_bytes=32, tfds_dir=str(tmp_path / "tfds"))
    assert sum(len(s.y) for s in data.splits.values()) == 150
    with pytest.raises(GenreError, match="no row with a program and a positive wall_time_s"):
        cm.load_code_metrics(str(tmp_path), "apps", "latency", max_bytes=32, tfds_dir=str(tmp_path / "tfds"))
