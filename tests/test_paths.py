"""Workdir paths: local folders keep their os calls, bucket URIs go through etils.epath (a fake
``gs://bucket`` on a local folder, ``conftest.bucket``), and both leave the same bytes."""
import os
import stat

import pytest

from genre_jax import paths
from genre_jax.errors import GenreError


def test_resolve_makes_local_paths_absolute_and_leaves_uris_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.resolve("runs/x") == str(tmp_path / "runs" / "x")
    assert paths.resolve("gs://b/r") == "gs://b/r"  # os.path.abspath would make it <cwd>/gs:/b/r
    assert paths.resolve("s3://b/r/") == "s3://b/r/"
    assert paths.is_remote("gs://b/r") and not paths.is_remote("runs/gs://x") and not paths.is_remote("/abs")
    assert paths.scheme("gs://b") == "gs" and paths.scheme("runs/x") is None
    for uri in ("ftp://x", "GS://x"):  # epath would take either for a local folder named ftp: or GS:
        with pytest.raises(GenreError, match=rf"{uri}: unsupported scheme {uri[:-1]}; expected a local folder or "
                                             rf"one of gs://"):
            paths.resolve(uri)


def test_missing_remote_packages_are_one_line(monkeypatch):
    monkeypatch.setattr(paths, "_importable", lambda module: False)
    with pytest.raises(GenreError, match=r"gs:// paths need gcsfs and google-cloud-storage \(pip install gcsfs "
                                         r"google-cloud-storage\)"):
        paths.check_backend("gs://b/r")
    with pytest.raises(GenreError, match=r"s3:// paths need s3fs"):
        paths.check_backend("s3://b/r")
    paths.check_backend("runs/x")  # local: nothing to check
    monkeypatch.setattr(paths, "_importable", lambda module: module != "google.cloud.storage")  # gcsfs or TF there
    with pytest.raises(GenreError, match=r"need google-cloud-storage \("):
        paths.check_backend("gs://b/r")
    monkeypatch.setattr(paths, "_importable", lambda module: True)
    paths.check_backend("gs://b/r")


def test_local_paths_never_go_through_epath(tmp_path, bucket):
    folder = str(tmp_path / "w")
    paths.makedirs(folder)
    paths.write_atomic(os.path.join(folder, "a.json"), "{}")
    paths.append_line(os.path.join(folder, "log.jsonl"), "x\n")
    assert paths.exists(folder) and paths.isdir(folder) and sorted(paths.listdir(folder)) == ["a.json", "log.jsonl"]
    assert paths.read_text(os.path.join(folder, "a.json")) == "{}"
    assert bucket.calls == []
    paths.makedirs(bucket.URI + "/run")
    assert bucket.calls and all(c[1].startswith(bucket.URI) for c in bucket.calls)


def test_atomic_write_is_one_object_write_remotely_and_a_rename_locally(tmp_path, bucket):
    uri = bucket.URI + "/run/results.json"
    paths.makedirs(bucket.URI + "/run")
    paths.write_atomic(uri, '{"a": 1}')
    paths.write_atomic(uri, '{"a": 2}')
    assert (bucket.root / "run" / "results.json").read_text() == '{"a": 2}'
    assert bucket.ops("open") == [(uri, "w"), (uri, "w")]  # no temporary object, no rename
    assert not bucket.ops("rename") and not bucket.ops("replace")
    assert os.listdir(bucket.root / "run") == ["results.json"]

    local = tmp_path / "results.json"
    paths.write_atomic(str(local), '{"a": 1}')
    assert stat.S_IMODE(local.stat().st_mode) == 0o600  # mkstemp's mode, as before
    local.chmod(0o644)
    paths.write_atomic(str(local), '{"a": 2}')
    assert local.read_text() == '{"a": 2}' and stat.S_IMODE(local.stat().st_mode) == 0o644  # kept on rewrite
    assert os.listdir(tmp_path) == ["bucket", "results.json"]  # no temporary file left


def test_appended_lines_are_the_same_bytes_local_and_remote(tmp_path, bucket):
    local, uri = str(tmp_path / "log.jsonl"), bucket.URI + "/log.jsonl"
    for line in ('{"epoch": 0}\n', '{"epoch": 1}\n'):
        paths.append_line(local, line)
        paths.append_line(uri, line)
    assert (bucket.root / "log.jsonl").read_bytes() == (tmp_path / "log.jsonl").read_bytes() == \
        b'{"epoch": 0}\n{"epoch": 1}\n'
    assert bucket.ops("open")[-1] == (uri, "wb")  # the object rewritten whole


def test_walk_copytree_mtime_and_rmtree_on_a_bucket(tmp_path, bucket):
    tree = bucket.root / "run" / "ce"
    (tree / "best" / "3").mkdir(parents=True)
    (tree / "best" / "3" / "z.bin").write_bytes(b"z")
    (tree / "best" / "checksums.json").write_text("{}")
    (tree / "log.jsonl").write_text("x\n")
    uri = bucket.URI + "/run/ce"
    walked = [(root, sorted(dirs), sorted(files)) for root, dirs, files in paths.walk(uri)]
    assert walked == [(uri, ["best"], ["log.jsonl"]), (uri + "/best", ["3"], ["checksums.json"]),
                      (uri + "/best/3", [], ["z.bin"])]
    assert list(paths.walk(uri + "/absent")) == []  # as os.walk
    assert paths.getmtime(uri + "/log.jsonl") == int((tree / "log.jsonl").stat().st_mtime)

    paths.copytree(uri, str(tmp_path / "down"))  # bucket -> local
    paths.copytree(str(tmp_path / "down"), bucket.URI + "/copy")  # local -> bucket
    assert (tmp_path / "down" / "best" / "3" / "z.bin").read_bytes() == b"z"
    assert (bucket.root / "copy" / "best" / "checksums.json").read_text() == "{}"

    paths.rmtree(uri)
    paths.rmtree(uri)  # a missing folder is no error
    assert not tree.exists() and not paths.exists(uri)


def test_open_reads_only():
    with pytest.raises(ValueError, match="reads only"):
        paths.open("x", "w")
