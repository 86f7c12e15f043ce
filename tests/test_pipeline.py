"""The pipeline: phases in order, resume, settings checked before any work, nothing left behind."""
import json
import os
import pathlib
import shutil
import signal

import jax
import ml_collections
import numpy as np
import pytest

import launch
from genre_jax import checkpoint, loop, models, preemption, settings
from genre_jax.errors import GenreError
from genre_jax.tokenizers import tokenizer_from_spec


def _final_params(workdir):
    ckpt = checkpoint.PhaseCheckpoints(workdir, "ce")
    return ckpt.restore("last", _like(workdir))[0].params


def _like(workdir):
    meta = checkpoint.PhaseCheckpoints(workdir, "ce").meta("best")
    tok = tokenizer_from_spec(meta["tokenizer"])
    model = models.make_model(ml_collections.ConfigDict(meta["config"]["model"]), tok)
    params = models.init_params(model, 5, tok.length, jax.random.key(0))
    tx = loop.make_optimizer(settings.resolve(ml_collections.ConfigDict(meta["config"]), tok).ce.optim, 10)
    return loop.TrainState(jax.numpy.zeros((), jax.numpy.int32), params, tx.init(params))


def test_interrupted_ce_resumes_to_the_same_parameters(tmp_path, toy_data_dir, monkeypatch,
                                                      tiny_config):
    config = tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce", **{"ce.max_epochs": 3,
                                                                                   "ce.patience": 5})
    launch.run(config, str(tmp_path / "straight"))

    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "last" and step == 1:
            raise KeyboardInterrupt  # as if the job were killed after epoch 2's checkpoint

    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch.run(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    assert checkpoint.PhaseCheckpoints(str(tmp_path / "resumed"), "ce").meta("last")["epoch"] == 2
    with open(tmp_path / "resumed" / "ce" / "log.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed while appending epoch 3's line: a torn tail
    launch.run(config, str(tmp_path / "resumed"))

    a = _final_params(str(tmp_path / "straight"))
    b = _final_params(str(tmp_path / "resumed"))
    jax.tree.map(np.testing.assert_array_equal, a, b)  # a run against itself on one machine: bit for bit
    log = [json.loads(l) for l in open(tmp_path / "resumed" / "ce" / "log.jsonl")]  # the torn line is gone
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert open(tmp_path / "resumed" / "ce" / "log.jsonl").read() == open(tmp_path / "straight" / "ce" /
                                                                           "log.jsonl").read()


def test_sigterm_stops_after_the_epoch_in_progress_and_the_same_command_resumes(tmp_path, toy_data_dir, monkeypatch,
                                                                                 tiny_config):
    config = tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce,eval",
                         **{"ce.max_epochs": 3, "ce.patience": 5, "eval.splits": "test"})
    launch.run(config, str(tmp_path / "straight"))
    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_sigterm(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if which == "last" and step == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's notice arrives during epoch 1

    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_sigterm)
    with preemption.graceful_sigterm(), pytest.raises(preemption.Stopped, match=r"ce epoch 1/3 \(saved\)"):
        launch.run(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    assert signal.getsignal(signal.SIGTERM) is not preemption._handler  # the handler is gone after the run
    assert checkpoint.PhaseCheckpoints(str(tmp_path / "resumed"), "ce").meta("last")["epoch"] == 1
    launch.run(config, str(tmp_path / "resumed"))  # the lock was released; CE continues from epoch 2
    jax.tree.map(np.testing.assert_array_equal,
                 _final_params(str(tmp_path / "straight")), _final_params(str(tmp_path / "resumed")))
    # the same numbers, and no write time in the file (the checkpoint folders' Orbax metadata has them)
    assert (tmp_path / "resumed" / "results.json").read_bytes() == (tmp_path / "straight" / "results.json").read_bytes()


def test_bad_inputs_raise_one_line_errors_and_leave_nothing(tmp_path, toy_data_dir, tiny_config):
    cases = [
        (dict(data_dir=str(toy_data_dir), dataset="nope"), "nope"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", **{"tokenizer.name": "bogus"}), "config.tokenizer.name"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", phases="ce,train"), "config.phases"),
        (dict(data_dir=str(toy_data_dir), dataset="toy", **{"model.name": "resnet"}), "config.model.name"),
    ]
    for i, (overrides, needle) in enumerate(cases):
        workdir = tmp_path / f"w{i}"
        with pytest.raises(GenreError, match=needle) as err:
            launch.run(tiny_config(**overrides), str(workdir))
        assert "\n" not in str(err.value)
        assert not workdir.exists()


def test_a_bucket_workdir_it_cannot_use_is_refused_before_any_work(tmp_path, toy_data_dir, tiny_config,
                                                                    monkeypatch):
    from genre_jax import paths
    config = tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_importable", lambda module: False)
    with pytest.raises(GenreError, match=r"^gs://b/run: gs:// paths need gcsfs and google-cloud-storage"):
        launch.run(config, "gs://b/run")
    with pytest.raises(GenreError, match=r"^ftp://b/run: unsupported scheme ftp://"):
        launch.run(config, "ftp://b/run")
    monkeypatch.setattr(paths, "_importable", lambda module: True)
    with pytest.raises(GenreError, match=r"--profile writes to a local folder, not gs://b/run/profile; pass "
                                         r"--profile_dir"):
        launch.run(config, "gs://b/run", profile_steps=2)
    assert os.listdir(tmp_path) == ["data"]  # no local folder named gs: or ftp:


def test_workdir_of_a_different_model_is_refused(tmp_path, toy_data_dir, tiny_config):
    workdir = str(tmp_path / "w")
    launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce", **{"ce.max_epochs": 1}), workdir)
    with pytest.raises(GenreError, match="different model"):
        launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", **{"model.d_model": 32}), workdir)


def test_settings_are_checked_before_training(tmp_path, toy_data_dir, tiny_config):
    cases = [({"eval.splits": "val,tst"}, "config.eval.splits"), ({"ce.batch_size": 0}, "config.ce.batch_size"),
             ({"model.num_heads": 0}, "config.model.num_heads"),
             ({"phases": "ce,token,eval", "token.method": "ce"}, "config.token.method"),
             ({"model.dropout": 1.0}, r"config.model.dropout: expected a number in \[0, 1\)"),
             ({"ce.max_epochs": 0}, "config.ce.max_epochs: expected an integer >= 1"),
             ({"rl.lr_floor": 2.0}, r"config.rl.lr_floor: expected a number in \[0, 1\]")]
    for i, (overrides, needle) in enumerate(cases):
        with pytest.raises(GenreError, match=needle):
            launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", **overrides), str(tmp_path / f"w{i}"))
        assert not (tmp_path / f"w{i}").exists()


def test_a_second_launch_on_a_workdir_in_use_and_an_empty_workdir_are_refused(tmp_path, toy_data_dir,
                                                                               tiny_config):
    config = tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="ce", **{"ce.max_epochs": 1})
    workdir = str(tmp_path / "busy")
    with checkpoint.WorkdirLock(workdir):  # another launch holds it (flock: per open file, so this conflicts)
        with pytest.raises(GenreError, match=rf"workdir {workdir} is in use by another launch \(host .*, pid "
                                             rf"{os.getpid()}, since ") as err:
            launch.run(config, workdir)
        assert "\n" not in str(err.value)
    assert os.listdir(workdir) == [".lock"]  # nothing else written
    launch.run(config, workdir)  # released: the next launch runs
    with pytest.raises(GenreError, match="--workdir is empty"):
        launch.run(config, " ")


def test_eval_alone_restores_every_checkpoint_and_reuses_unchanged_results(tiny_run, tmp_path,
                                                                           tiny_config):
    source, summary = tiny_run
    workdir = str(tmp_path / "copy")
    shutil.copytree(source, workdir)
    again = launch.run(tiny_config(phases="eval"), workdir)
    assert again["phases"] == json.loads(json.dumps(summary["phases"]))  # same checkpoints: nothing recomputed
    # a changed evaluation setting is recomputed for every method found, RL selection included
    changed = launch.run(tiny_config(phases="eval", **{"eval.num_samples": 3, "eval.splits": "test"}), workdir)
    assert set(changed["phases"]) == {"ce", "genre2"}
    assert changed["phases"]["genre2"]["num_samples"] == 3 and set(changed["phases"]["ce"]["splits"]) == {"test"}
    assert changed["phases"]["genre2"]["selection"] == summary["phases"]["genre2"]["selection"]
    saved = np.load(os.path.join(workdir, "eval", "genre2", "predictions_test.npz"))
    assert saved["samples_z"].shape[1] == 3
    # a damaged best checkpoint is refused, even where results.json would otherwise be reused
    best = pathlib.Path(workdir) / "rl" / "genre2" / "best"
    step = next(p for p in best.iterdir() if p.name.isdigit())
    largest = max((p for p in step.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    before = open(os.path.join(workdir, "results.json")).read()
    with pytest.raises(GenreError, match=r"rl/genre2/best/\d+: checkpoint fails its checksum"):
        launch.run(tiny_config(phases="eval", **{"eval.num_samples": 3, "eval.splits": "test"}), workdir)
    assert open(os.path.join(workdir, "results.json")).read() == before


def test_methods_from_ce_need_its_checkpoint(tmp_path, toy_data_dir, tiny_config):
    with pytest.raises(GenreError, match="no ce checkpoint to start from; add 'ce' to --config.phases"):
        launch.run(tiny_config(data_dir=str(toy_data_dir), dataset="toy", phases="rl,eval"), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
