"""The hyperparameter search with a fake launcher (nothing is trained): trials, the CSV in the layout
the suite reads, resume, failed and interrupted trials, bad input."""
import json
import math
import os

import optuna
import pytest

from experiments import search
from experiments.configs import suite_protocols as sp
from fakes import write_talent_dataset

HEADER = ("dataset,train_size,learning_rate,base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,mlp_hidden,"
          "source,authors_val_r2")


class FakeLaunch:
    """Writes the results.json a CE launch would, with a val R² that depends on the searched flags;
    ``fail``: call indices that exit 2, ``interrupt``: the call index killed mid-run."""

    def __init__(self, fail=(), interrupt=None):
        self.calls, self.fail, self.interrupt = [], set(fail), interrupt

    def __call__(self, cmd, log_path, cwd):
        flags = dict(f[2:].split("=", 1) for f in cmd if f.startswith("--") and "=" in f)
        index = len(self.calls)
        self.calls.append(flags)
        workdir = flags["workdir"]
        assert log_path == os.path.join(workdir, "search.log") and os.path.isdir(workdir)
        if index == self.interrupt:
            open(os.path.join(workdir, "half_trained"), "w").close()
            raise KeyboardInterrupt
        if index in self.fail:
            with open(log_path, "w") as f:
                f.write("epoch 1/3\nerror: boom\n")
            return 2
        split = {"mean": {"r2": r2(flags), "rmse": 0.5}, "median": {"r2": 0.0, "rmse": 0.6}}
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"phases": {"ce": {"splits": {"val": split}, "num_samples": 32}}}, f)
        return 0


def r2(flags):
    return round(0.9 - 0.05 * abs(math.log10(float(flags["config.ce.learning_rate"])) + 4)
                 - 0.01 * int(flags["config.model.num_layers"]) + 1e-4 * int(flags["config.model.d_model"]) / 128, 6)


@pytest.fixture
def data_dir(tmp_path):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    write_talent_dataset(tmp_path / "data", "toy2", n=250, seed=1)
    return tmp_path / "data"


def _args(data_dir, tmp_path, *extra, trials=3, datasets="toy,toy2", name="optuna.journal"):
    return [f"--data_dir={data_dir}", f"--datasets={datasets}", f"--trials={trials}", f"--out={tmp_path / 'hp.csv'}",
            f"--storage={tmp_path / name}", f"--workroot={tmp_path / 'runs'}", *extra]


def _study(tmp_path, dataset="toy", name="optuna.journal"):
    storage = search.open_storage(str(tmp_path / name))
    return optuna.load_study(study_name=search.study_name("cpu", dataset), storage=storage)


def test_search_writes_each_datasets_best_trial_in_the_authors_layout(data_dir, tmp_path, capsys):
    fake = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path), launcher=fake) == 0
    assert len(fake.calls) == 6
    root = tmp_path / "runs" / "cpu"
    assert [c["workdir"] for c in fake.calls] == [str(root / d / f"trial{k}")
                                                  for d in ("toy", "toy2") for k in range(3)]
    for flags in fake.calls:
        assert flags["config.phases"] == "ce,eval" and flags["config.dataset"] in ("toy", "toy2")
        assert flags["config.eval.splits"] == "val" and flags["config.eval.decode"] == "sample"
        assert flags["config.model.mlp_layers"] == flags["config.model.num_layers"]  # as the suite maps the CSV
        assert 1e-5 <= float(flags["config.ce.learning_rate"]) <= 1e-3
    command = search.trial_command(search.search_config.get_config(), "cpu", str(data_dir), "toy", "/w", None)
    assert [f for f in command if f.startswith("--config.eval.splits=")] == ["--config.eval.splits=val"]  # not val,test

    with open(tmp_path / "hp.csv") as f:
        assert f.readline().strip() == HEADER
    rows = sp.read_authors_hparams(str(tmp_path / "hp.csv"))  # the suite accepts the file
    assert sorted(rows) == ["toy", "toy2"]
    for dataset, calls in (("toy", fake.calls[:3]), ("toy2", fake.calls[3:])):
        best = max(calls, key=r2)
        row = rows[dataset]
        assert row["source"] == "search" and row["authors_val_r2"] == f"{r2(best):.4f}"
        assert row["train_size"] == str(sp.train_size(str(data_dir), dataset))
        # the row relaunches exactly the best trial's model, tokenizer and rate
        for flag in sp.authors_overrides(row):
            key, _, value = flag[2:].partition("=")
            if key != "config.token.learning_rate":
                assert best[key] == value, key
    out = capsys.readouterr().out
    assert out.count("ok      toy trial") == 3 and out.strip().endswith(f"6 trial(s) this time, 0 failed; rows in "
                                                                          f"{tmp_path / 'hp.csv'}")


def test_the_same_command_resumes_without_repeating_trials(data_dir, tmp_path):
    assert search.main(_args(data_dir, tmp_path, trials=2, datasets="toy"), launcher=FakeLaunch()) == 0
    again = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, trials=2, datasets="toy"), launcher=again) == 0
    assert again.calls == []
    more = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, trials=3, datasets="toy"), launcher=more) == 0
    assert [c["workdir"] for c in more.calls] == [str(tmp_path / "runs" / "cpu" / "toy" / "trial2")]
    # per-trial seeding: 2 + 1 trials suggest what 3 in one go do
    at_once = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, f"--workroot={tmp_path / 'runs2'}", trials=3, datasets="toy",
                             name="other.journal"), launcher=at_once) == 0  # the later --workroot wins
    assert at_once.calls[2]["config.ce.learning_rate"] == more.calls[0]["config.ce.learning_rate"]
    assert len({c["config.ce.learning_rate"] for c in at_once.calls}) == 3


def test_a_failed_trial_is_recorded_and_the_search_goes_on(data_dir, tmp_path, capsys):
    fake = FakeLaunch(fail={1})
    assert search.main(_args(data_dir, tmp_path, datasets="toy"), launcher=fake) == 0
    assert len(fake.calls) == 3
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                      optuna.trial.TrialState.COMPLETE]
    assert _study(tmp_path).trials[1].user_attrs["error"] == "error: boom"
    assert "FAILED  toy trial 1" in capsys.readouterr().out
    row = sp.read_authors_hparams(str(tmp_path / "hp.csv"))["toy"]
    assert row["authors_val_r2"] == f"{max(r2(fake.calls[0]), r2(fake.calls[2])):.4f}"
    again = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, datasets="toy"), launcher=again) == 0 and again.calls == []


def test_an_interrupted_trial_is_retried_in_its_workdir(data_dir, tmp_path, capsys):
    cut = FakeLaunch(interrupt=1)
    assert search.main(_args(data_dir, tmp_path, datasets="toy"), launcher=cut) == 130
    assert "interrupted: 1 trial(s) finished this time" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "hp.csv")  # no row before the dataset's search is complete
    resumed = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, datasets="toy"), launcher=resumed) == 0
    assert len(resumed.calls) == 2
    retry = resumed.calls[0]
    assert retry == cut.calls[1]  # same parameters, same folder
    assert os.path.exists(os.path.join(retry["workdir"], "half_trained"))
    study = _study(tmp_path)
    assert len(search.counted_trials(study)) == 3 and study.trials[1].state == optuna.trial.TrialState.FAIL

    # A search killed outright (SIGKILL) leaves its trial RUNNING: the next start retries it too.
    search.requeue_interrupted(study, "")  # nothing RUNNING: nothing happens
    assert len(study.trials) == 4
    trial = study.ask()
    params = search.suggest(trial, search.search_config.get_config())
    trial.set_user_attr("workdir", str(tmp_path / "runs" / "cpu" / "toy" / "trial4"))
    os.makedirs(trial.user_attrs["workdir"])
    killed = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path, trials=4, datasets="toy"), launcher=killed) == 0
    assert len(killed.calls) == 1 and killed.calls[0]["workdir"].endswith("trial4")
    assert killed.calls[0]["config.model.d_model"] == str(params["d_model"])
    assert "trial(s) 4 were interrupted; retrying them" in capsys.readouterr().out


def test_rows_of_other_datasets_are_kept(data_dir, tmp_path):
    (tmp_path / "hp.csv").write_text(HEADER + "\nother,664,9.83e-05,2,8,512,8,5,2048,128,defaults,0.3673\n"
                                     "toy,128,1e-05,2,8,256,4,3,1024,1024,defaults,0.1000\n")
    assert search.main(_args(data_dir, tmp_path, trials=1, datasets="toy"), launcher=FakeLaunch()) == 0
    lines = (tmp_path / "hp.csv").read_text().splitlines()
    assert lines[0] == HEADER and lines[1] == "other,664,9.83e-05,2,8,512,8,5,2048,128,defaults,0.3673"
    assert len(lines) == 3 and lines[2].startswith("toy,128,") and ",search," in lines[2]
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_dry_run_writes_nothing(data_dir, tmp_path, capsys):
    assert search.main(_args(data_dir, tmp_path, "--dry_run", datasets="toy"), launcher=FakeLaunch()) == 0
    out = capsys.readouterr().out
    assert "toy: 0 of 3 trial(s) finished" in out and "--config.phases=ce,eval" in out
    assert not os.path.exists(tmp_path / "optuna.journal") and not os.path.exists(tmp_path / "hp.csv")


@pytest.mark.parametrize("extra, message", [
    (["--datasets=nope"], "error: dataset folder(s) ['nope'] not in"),
    (["--trials=0"], "error: --trials must be at least 1, got 0"),
    (["--budget=gpu"], "error: --budget: 'gpu' is not one of cpu, paper"),
])
def test_bad_input_is_one_line(data_dir, tmp_path, capsys, extra, message):
    fake = FakeLaunch()
    assert search.main(_args(data_dir, tmp_path) + extra, launcher=fake) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and fake.calls == []


def test_trial_folders_of_another_search_are_refused(data_dir, tmp_path, capsys):
    os.makedirs(tmp_path / "runs" / "cpu" / "toy" / "trial0")
    assert search.main(_args(data_dir, tmp_path, datasets="toy"), launcher=FakeLaunch()) == 2
    assert "which no trial of study search/cpu/toy" in capsys.readouterr().err
