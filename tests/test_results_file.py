"""results.json: atomic writes, merging entries, refusing another dataset's or seed's file."""
import json
import os

import pytest

from genre_jax.errors import GenreError
from genre_jax.results_file import merge_into_results, merge_timings, read_phases, write_json_atomic


def test_merge_keeps_other_entries_and_replaces_its_own(tmp_path):
    workdir = str(tmp_path / "w")
    merge_into_results(workdir, "toy", 0, {"ce": {"a": 1}})
    merged = merge_into_results(workdir, "toy", 0, {"genre2": {"b": 2}, "ce": {"a": 3}})
    assert merged == {"dataset": "toy", "seed": 0, "phases": {"ce": {"a": 3}, "genre2": {"b": 2}}}
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == merged
    assert read_phases(workdir, "toy", 0) == merged["phases"]
    assert os.listdir(workdir) == ["results.json"]  # no temporary file left behind


def test_other_dataset_seed_or_unreadable_file_is_refused(tmp_path):
    merge_into_results(str(tmp_path), "toy", 0, {"ce": {}})
    with pytest.raises(GenreError, match="holds results for dataset 'toy', not 'other'"):
        read_phases(str(tmp_path), "other", 0)
    with pytest.raises(GenreError, match="holds results for seed 0, not 1"):
        read_phases(str(tmp_path), "toy", 1)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(GenreError, match="unreadable"):
        read_phases(str(tmp_path), "toy", 0)
    for wrong_shape in ("[1, 2]", '{"results": 3}', '{"phases": [1]}', '{"phases": {"ce": 3}}'):  # valid JSON, not a results file
        (tmp_path / "results.json").write_text(wrong_shape)
        with pytest.raises(GenreError, match="not a results file"):
            read_phases(str(tmp_path), "toy", 0)
    assert read_phases(str(tmp_path / "absent"), "toy", 0) == {}


def test_timings_are_kept_apart_and_merged(tmp_path):
    merge_timings(str(tmp_path), {"ce": {"wall_time_s": 1.5}})
    merge_timings(str(tmp_path), {"genre2": {"wall_time_s": 2.0}})
    assert json.loads((tmp_path / "timings.json").read_text()) == {
        "phases": {"ce": {"wall_time_s": 1.5}, "genre2": {"wall_time_s": 2.0}}}


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "x.json")
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    with open(path) as f:
        assert json.load(f) == {"ok": True}
    assert os.listdir(tmp_path) == ["x.json"]


def test_a_bucket_workdir_gets_the_same_results_and_timings(tmp_path, bucket):
    local, uri = str(tmp_path / "w"), bucket.URI + "/run"
    for workdir in (local, uri):
        merge_into_results(workdir, "toy", 0, {"ce": {"a": 1}})
        merge_into_results(workdir, "toy", 0, {"genre2": {"b": 2}})
        merge_timings(workdir, {"ce": {"wall_time_s": 1.5}})
        merge_timings(workdir, {"genre2": {"wall_time_s": 2.0}})
    for name in ("results.json", "timings.json"):
        assert (bucket.root / "run" / name).read_bytes() == (tmp_path / "w" / name).read_bytes()
    assert read_phases(uri, "toy", 0) == {"ce": {"a": 1}, "genre2": {"b": 2}}
    with pytest.raises(GenreError, match=r"gs://bucket/run/results.json holds results for seed 0"):
        read_phases(uri, "toy", 1)
    assert sorted(os.listdir(bucket.root / "run")) == ["results.json", "timings.json"]
    assert not os.path.exists("gs:")  # nothing landed in a local folder named after the scheme
