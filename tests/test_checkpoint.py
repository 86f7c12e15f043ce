import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tabular
from genre_jax import checkpoint
from genre_jax.errors import GenreError


def test_save_restore_round_trip_keeps_only_latest(tmp_path):
    ckpt = checkpoint.PhaseCheckpoints(str(tmp_path), "ce")
    assert not ckpt.has("last") and ckpt.meta("best") is None
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(3)}
    ckpt.save("last", 1, tree, {"epoch": 1})
    ckpt.save("last", 2, {"w": tree["w"] + 1, "step": jnp.array(4)}, {"epoch": 2})
    restored, meta = checkpoint.PhaseCheckpoints(str(tmp_path), "ce").restore("last", tree)
    np.testing.assert_array_equal(restored["w"], tree["w"] + 1)
    assert meta == {"epoch": 2} and sorted(p.name for p in (tmp_path / "ce" / "last").iterdir()) == ["2"]
    with pytest.raises(GenreError, match="no checkpoint"):
        ckpt.restore("best", tree)


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
