import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tabular
from genre_jax import checkpoint, paths
from genre_jax.errors import GenreError


def test_save_restore_round_trip_keeps_the_two_latest(tmp_path):
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "ce")
    assert not ckpt.has("last") and ckpt.meta("best") is None
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(3)}
    for step in (1, 2, 3):
        ckpt.save("last", step, {"w": tree["w"] + step, "step": jnp.array(step)}, {"epoch": step})
    restored, meta = checkpoint.PhaseCheckpoints(str(tmp_path), "ce").restore("last", tree)
    np.testing.assert_array_equal(restored["w"], tree["w"] + 3)
    assert meta == {"epoch": 3}
    assert sorted(p.name for p in (tmp_path / "ce" / "last").iterdir()) == ["2", "3", "checksums.json"]
    assert set(json.loads((tmp_path / "ce" / "last" / "checksums.json").read_text())) == {"2", "3"}
    with pytest.raises(GenreError, match="no checkpoint"):
        ckpt.restore("best", tree)


def test_arrays_replicated_on_8_devices_and_typed_keys_round_trip(tmp_path):
    import jax
    from genre_jax import parallel
    mesh = parallel.data_mesh()
    assert mesh.size == 8  # replicated: saved from one replica (slices under MIN_REPLICA_SLICE_BYTES)
    tree = parallel.replicate({"w": jnp.arange(24.0).reshape(4, 6), "key": jax.random.key(7)}, mesh)
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "rl")
    ckpt.save("last", 0, tree, {"epoch": 0})
    restored, _ = ckpt.restore("last", tree)
    np.testing.assert_array_equal(restored["w"], tree["w"])
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)  # a key, not its raw data
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))


def _corrupt(step_dir):
    """Flips 64 bytes in the middle of the step folder's largest file (an array data file)."""
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    largest.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_is_never_read(tmp_path, capsys):
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "ce")
    tree = {"w": np.arange(4096, dtype=np.float32)}
    ckpt.save("best", 5, tree, {"epoch": 5})
    ckpt.save("last", 4, tree, {"epoch": 4})
    ckpt.save("last", 5, {"w": tree["w"] + 1}, {"epoch": 5})
    digest = ckpt.digest("best")
    _corrupt(tmp_path / "ce" / "best" / "5")
    for read in (lambda: ckpt.restore("best", tree), lambda: ckpt.meta("best"), lambda: ckpt.digest("best")):
        with pytest.raises(GenreError, match=r"ce/best/5: checkpoint fails its checksum .*delete .*ce/best") as err:
            read()
        assert "\n" not in str(err.value)
    # last keeps two steps: a damaged newest one falls back to the older, with a warning
    _corrupt(tmp_path / "ce" / "last" / "5")
    restored, meta = ckpt.restore("last", tree)
    assert meta == {"epoch": 4} and np.array_equal(restored["w"], tree["w"])
    assert "ce/last/5: checkpoint fails its checksum; resuming from step 4" in capsys.readouterr().err
    _corrupt(tmp_path / "ce" / "last" / "4")
    with pytest.raises(GenreError, match="ce/last/4: checkpoint fails its checksum"):
        ckpt.restore("last", tree)
    # a fresh save replaces the digest: the same step with other bytes is a different checkpoint
    ckpt.save("best", 5, {"w": tree["w"] * 2}, {"epoch": 5})
    assert ckpt.digest("best") not in (None, digest)


def test_workdir_identity_check(tmp_path):
    config = tabular.get_config("tiny")
    checkpoint.check_workdir_matches(str(tmp_path), config)  # empty workdir: fine
    (tmp_path / "config.json").write_text(json.dumps({"identity": checkpoint.model_identity(config)}))
    config.eval.num_samples = 3  # not part of the identity
    checkpoint.check_workdir_matches(str(tmp_path), config)
    # a workdir written before model.final_norm existed still matches while the field keeps its old value
    old = checkpoint.model_identity(config)
    del old["model"]["final_norm"]
    (tmp_path / "config.json").write_text(json.dumps({"identity": old}))
    checkpoint.check_workdir_matches(str(tmp_path), config)
    config.model.final_norm = False
    with pytest.raises(GenreError, match="different model \\(model"):
        checkpoint.check_workdir_matches(str(tmp_path), config)
    config.model.final_norm = True
    config.dataset = "houses"
    with pytest.raises(GenreError, match="different model \\(dataset"):
        checkpoint.check_workdir_matches(str(tmp_path), config)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GenreError, match="unreadable"):
        checkpoint.check_workdir_matches(str(tmp_path), config)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(GenreError, match=r"config.json: holds a JSON list; expected the object"):
        checkpoint.check_workdir_matches(str(tmp_path), config)


def test_a_damaged_step_without_a_checksum_is_one_line(tmp_path):
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "ce")
    tree = {"w": np.arange(4096, dtype=np.float32)}
    ckpt.save("best", 3, tree, {"epoch": 3})
    (tmp_path / "ce" / "best" / "checksums.json").unlink()  # as written before checksums existed
    data = max((p for p in (tmp_path / "ce" / "best" / "3").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])
    with pytest.raises(GenreError, match=r"ce/best/3: unreadable checkpoint \(.*\); delete .*ce/best") as err:
        ckpt.restore("best", tree)
    assert "\n" not in str(err.value)


def test_a_crash_between_best_and_last_saves_can_resume(tmp_path):
    first = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")
    tree = {"w": np.ones(3, np.float32)}
    first.save("best", 0, tree, {"epoch": -1})
    again = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")  # the rerun saves step 0 once more
    again.save("best", 0, {"w": np.zeros(3, np.float32)}, {"epoch": -1})
    np.testing.assert_array_equal(again.restore("best", tree)[0]["w"], 0)


def test_a_failed_write_is_one_line_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "ce")
    tree = {"w": np.ones(8, np.float32)}

    def full_disk(self, step, *args, **kwargs):  # what tensorstore does when the disk fills mid-save
        (tmp_path / "ce" / "last" / f"{step}.orbax-checkpoint-tmp-123").mkdir(parents=True)
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "opt_state/0" in OCDBT database')

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(GenreError, match=r"ce/last/2: could not write the checkpoint \(ValueError: RESOURCE_EXH"):
        ckpt.save("last", 2, tree, {"epoch": 2})
    assert not list((tmp_path / "ce" / "last").glob("*orbax-checkpoint-tmp*"))


class _StepLister:
    """Stands in for Orbax's manager on the fake bucket, listing step folders only: Orbax's own gs://
    I/O asks the GCS API about the bucket (google-cloud-storage) and moves arrays with tensorstore's
    gcs driver, neither of which runs offline, so Orbax itself is not exercised on a bucket here."""

    def __init__(self, path):
        self.path = path

    def all_steps(self):
        return sorted(int(n) for n in paths.listdir(self.path) if n.isdigit()) if paths.isdir(self.path) else []

    def latest_step(self):
        return (self.all_steps() or [None])[-1]


def test_checksums_of_a_bucket_workdir_are_read_and_checked_through_epath(tmp_path, bucket, monkeypatch):
    local = checkpoint.PhaseCheckpoints(str(tmp_path / "w"), "ce")
    tree = {"w": np.arange(4096, dtype=np.float32)}
    local.save("best", 5, tree, {"epoch": 5})
    shutil.copytree(tmp_path / "w", bucket.root / "run")  # the same files, now objects of gs://bucket/run
    step = bucket.URI + "/run/ce/best/5"
    assert checkpoint.folder_digest(step) == checkpoint.folder_digest(str(tmp_path / "w" / "ce" / "best" / "5"))
    assert (step + "/_CHECKPOINT_METADATA", "rb") in bucket.ops("open")  # read as an object, not a local file

    monkeypatch.setattr(checkpoint, "_manager", lambda path, keep=1: _StepLister(path))
    remote = checkpoint.PhaseCheckpoints(bucket.URI + "/run", "ce")
    assert remote.root == "gs://bucket/run/ce" and remote.has("best") and remote.best_step() == 5
    assert remote.digest("best") == local.digest("best") is not None
    _corrupt(bucket.root / "run" / "ce" / "best" / "5")
    with pytest.raises(GenreError, match=r"^gs://bucket/run/ce/best/5: checkpoint fails its checksum .*delete "
                                         r"gs://bucket/run/ce/best to retrain"):
        remote.digest("best")


def test_a_bucket_workdir_is_checked_but_not_locked(bucket, capsys):
    config = tabular.get_config("tiny")
    uri = bucket.URI + "/run"
    checkpoint.check_workdir_matches(uri, config)  # nothing there yet
    with checkpoint.WorkdirLock(uri), checkpoint.WorkdirLock(uri):  # object stores have no flock
        pass
    assert capsys.readouterr().err.count("warning: gs://bucket/run: a bucket workdir is not locked") == 2
    assert os.listdir(bucket.root) == []  # no lock object left behind
    (bucket.root / "run").mkdir()
    config.dataset = "houses"
    (bucket.root / "run" / "config.json").write_text(json.dumps({"identity": checkpoint.model_identity(
        tabular.get_config("tiny"))}))
    with pytest.raises(GenreError, match=r"workdir gs://bucket/run holds a checkpoint of a different model \(dataset"):
        checkpoint.check_workdir_matches(uri, config)
