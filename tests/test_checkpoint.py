import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tabular
from genre_jax import checkpoint
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


def test_a_crash_between_best_and_last_saves_can_resume(tmp_path):
    first = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")
    tree = {"w": np.ones(3, np.float32)}
    first.save("best", 0, tree, {"epoch": -1})
    again = checkpoint.PhaseCheckpoints(str(tmp_path), "rl/genre2")  # the rerun saves step 0 once more
    again.save("best", 0, {"w": np.zeros(3, np.float32)}, {"epoch": -1})
    np.testing.assert_array_equal(again.restore("best", tree)[0]["w"], 0)
