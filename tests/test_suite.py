"""The suite runner with a fake launcher: job listing, commands, resume after a kill, failure rows."""
import json
import os
import shutil
import threading
import time

import pytest

from experiments import launches, suite
from experiments.configs import suite_protocols as sp
from experiments.rows import row_key
from fakes import write_talent_dataset
from genre_jax import methods
from genre_jax.errors import GenreError

METRICS = {"rmse": 0.5, "mae": 0.4, "r2": 0.7, "spearman": 0.8, "rmse_original": 1.0}


def _entry(method, rmse=0.5):
    split = {agg: {**METRICS, "rmse": rmse} for agg in ("mean", "median", "greedy")}
    split["distribution"] = {"crps": 0.2, "coverage_90": 0.85}
    return {"method": method, "num_samples": 32, "splits": {"val": split, "test": split}, "wall_time_s": 1.0}


class FakeLauncher:
    """Writes what launch.py would (results.json entry, config.json) for the job named by the log file."""

    def __init__(self, fail=(), kill_after=None, no_entry=()):
        self.calls, self.fail, self.kill_after, self.no_entry = [], set(fail), kill_after, set(no_entry)
        self.commands = []

    def __call__(self, cmd, log_path, cwd):
        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            raise KeyboardInterrupt  # the suite is killed while this job runs
        workdir = os.path.dirname(os.path.dirname(log_path))
        method = os.path.basename(log_path)[:-len(".log")]
        dataset = os.path.basename(os.path.dirname(workdir))
        self.calls.append((dataset, method))
        assert cwd == suite.REPO and f"--workdir={workdir}" in cmd
        if (dataset, method) in self.fail:
            with open(log_path, "w") as f:
                f.write("epoch 1/3\r epoch 2/3\nerror: boom in " + method + "\n")
            return 2
        if (dataset, method) in self.no_entry:
            return 0
        if any(f.startswith("--config.phases=ce") for f in cmd):  # the CE checkpoint later launches start from
            os.makedirs(os.path.join(workdir, "ce", "best", "7"), exist_ok=True)
        self.commands.append(cmd)
        path = os.path.join(workdir, "results.json")
        results = json.load(open(path)) if os.path.exists(path) else {"dataset": dataset, "seed": 0, "phases": {}}
        results["phases"][method] = _entry(method)
        json.dump(results, open(path, "w"))
        json.dump({"versions": {"jax": "0.10.2"}}, open(os.path.join(workdir, "config.json"), "w"))
        return 0


@pytest.fixture
def data_dir(tmp_path):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    write_talent_dataset(tmp_path / "data", "toy2", n=250, seed=1)
    return tmp_path / "data"


def _args(data_dir, tmp_path, methods="ce,genre2,riemann,lightgbm", extra=()):
    return ["--protocol=cpu", f"--data_dir={data_dir}", f"--methods={methods}", f"--out={tmp_path / 'out.jsonl'}",
            f"--workroot={tmp_path / 'runs'}", *extra]


def _rows(tmp_path):
    with open(tmp_path / "out.jsonl") as f:
        return [json.loads(line) for line in f]


def test_job_listing_orders_ce_first_and_adds_it_when_needed():
    jobs = suite.list_jobs(["a", "b"], [0, 1], ["lightgbm", "genre2", "riemann", "genre2"], "cpu")
    assert len(jobs) == 2 * 2 * 4
    assert [j.method for j in jobs[:4]] == ["ce", "genre2", "riemann", "lightgbm"]
    assert [(j.dataset, j.seed) for j in jobs[::4]] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert [j.method for j in suite.list_jobs(["a"], [0], ["riemann", "lightgbm"], "cpu")] == ["riemann", "lightgbm"]
    assert [j.method for j in suite.list_jobs(["a"], [0], ["dist2"], "cpu")] == ["ce", "dist2"]  # CE added
    paper = suite.split_list(sp.get_config().methods)
    assert methods.with_dependencies(paper) == paper and len(paper) == 10  # the protocol's list is in order
    with pytest.raises(GenreError, match="unknown method"):
        suite.list_jobs(["a"], [0], ["xgboost"], "cpu")


def test_launch_commands(data_dir, tmp_path):
    config = sp.get_config("cpu")
    n_train = sp.train_size(str(data_dir), "toy")
    assert n_train == 128  # 0.64 * 200
    job = suite.Job("toy", 0, "genre2", "cpu")
    cmd = suite.launch_command(job, config, str(data_dir), "/w", python="py")
    assert cmd[:2] == ["py", suite.LAUNCH] and cmd[2].endswith("experiments/configs/tabular.py:quick")
    assert cmd[3:9] == ["--workdir=/w", f"--config.data_dir={data_dir}", "--config.dataset=toy", "--config.seed=0",
                        "--config.phases=rl,eval", "--config.rl.method=genre2"]
    for flag in ("--workdir=/w", "--config.dataset=toy", "--config.seed=0", "--config.phases=rl,eval",
                 "--config.rl.method=genre2", "--config.eval.num_samples=32", "--config.rl.max_epochs=60"):
        assert flag in cmd
    ce = suite.launch_command(suite.Job("toy", 0, "ce", "cpu"), config, str(data_dir), "/w")
    # 1 step per epoch at batch 128: the 1200-step budget hits the 200-epoch ceiling
    assert "--config.phases=ce,eval" in ce and "--config.ce.max_epochs=200" in ce and "--config.ce.patience=40" in ce
    token = suite.launch_command(suite.Job("toy", 0, "ntl_mse", "cpu"), config, str(data_dir), "/w")
    assert "--config.token.method=ntl_mse" in token and "--config.token.max_epochs=100" in token
    head = suite.launch_command(suite.Job("toy", 0, "pointwise", "cpu"), config, str(data_dir), "/w")
    assert "--config.phases=head,eval" in head and "--config.head.method=pointwise" in head
    gb = suite.launch_command(suite.Job("toy", 1, "lightgbm", "cpu"), config, str(data_dir), "/w", python="py")
    assert gb == ["py", "-m", "genre_jax.gbdt", f"--data_dir={data_dir}", "--dataset=toy", "--workdir=/w", "--seed=1"]
    assert sp.budget_overrides(config, "rl", 26091) == ["--config.rl.max_epochs=1", "--config.rl.steps_per_epoch=60"]
    assert sp.budget_overrides(config, "ce", 26091) == ["--config.ce.max_epochs=6", "--config.ce.patience=6"]


def test_paper_protocol_uses_authors_hparams_where_a_row_exists(data_dir):
    (data_dir / "authors_hparams.csv").write_text(
        "dataset,train_size,learning_rate,base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,mlp_hidden,"
        "source\ntoy,128,4.9e-05,8,4,512,8,5,2048,128,search\n")
    config = sp.get_config("paper")
    assert config.config.endswith("tabular.py:paper")
    cmd = suite.launch_command(suite.Job("toy", 0, "genre2", "paper"), config, str(data_dir), "/w")
    for flag in ("--config.eval.num_samples=128", "--config.rl.max_epochs=100", "--config.ce.learning_rate=4.9e-05",
                 "--config.tokenizer.base=8", "--config.tokenizer.digits=4", "--config.model.d_model=512",
                 "--config.model.num_heads=8", "--config.model.num_layers=5", "--config.model.mlp_layers=5",
                 "--config.model.d_ff=2048", "--config.model.mlp_hidden=128"):
        assert flag in cmd
    assert not any("max_epochs" in f for f in suite.launch_command(
        suite.Job("toy", 0, "ce", "paper"), config, str(data_dir), "/w"))  # paper keeps the variant's budget
    other = suite.launch_command(suite.Job("toy2", 0, "riemann", "paper"), config, str(data_dir), "/w")
    assert not any("model." in f for f in other)  # no row: the paper defaults
    with pytest.raises(ValueError, match="unknown protocol"):
        sp.get_config("gpu")


def test_cpu_protocol_takes_only_the_authors_tokenizer(data_dir):
    (data_dir / "authors_hparams.csv").write_text(
        "dataset,learning_rate,base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,mlp_hidden\n"
        "toy,4.9e-05,8,6,512,8,5,2048,128\n")
    config = sp.get_config("cpu")
    cmd = suite.launch_command(suite.Job("toy", 0, "genre2", "cpu"), config, str(data_dir), "/w")
    assert "--config.tokenizer.base=8" in cmd and "--config.tokenizer.digits=6" in cmd
    assert not any(f.startswith(("--config.model.", "--config.ce.learning_rate", "--config.token.learning_rate"))
                   for f in cmd)
    other = suite.launch_command(suite.Job("toy2", 0, "genre2", "cpu"), config, str(data_dir), "/w")
    assert not any("tokenizer" in f for f in other)  # no row: the quick variant's (2, 8)


@pytest.mark.parametrize("protocol", sp.PROTOCOLS)
def test_protocol_overrides_name_real_config_fields(protocol, data_dir):
    from experiments.configs import tabular
    (data_dir / "authors_hparams.csv").write_text(
        "dataset,learning_rate,base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,mlp_hidden\n"
        "toy,1e-4,2,8,256,4,3,1024,256\n")
    config = sp.get_config(protocol)
    base = tabular.get_config(config.config.partition(":")[2])
    flags = {f for m in methods.NAMES for f in sp.launch_overrides(config, "toy", m, str(data_dir))}
    assert flags
    for flag in flags:
        section, _, rest = flag[len("--config."):].partition(".")
        field = rest.partition("=")[0]
        assert section in base and field in base[section], f"{flag}: no such field in tabular.py"


def test_full_run_rows(data_dir, tmp_path):
    fake = FakeLauncher()
    assert suite.main(_args(data_dir, tmp_path), launcher=fake) == 0
    rows = _rows(tmp_path)
    assert [(r["dataset"], r["method"]) for r in rows] == fake.calls == [
        (d, m) for d in ("toy", "toy2") for m in ("ce", "genre2", "riemann", "lightgbm")]
    row = rows[1]
    assert row["status"] == "ok" and row["protocol"] == "cpu" and row["seed"] == 0
    assert row["test"]["mean"]["rmse"] == 0.5 and set(row["test"]) == {"mean", "median", "greedy", "distribution"}
    assert row["val"]["distribution"]["coverage_90"] == 0.85
    assert row["versions"] == {"jax": "0.10.2"} and row["wall_time_s"] >= 0
    assert "--config.rl.method=genre2" in row["command"]
    assert row["workdir"] == str(tmp_path / "runs" / "cpu" / "toy" / "seed0")


def test_killed_suite_resumes_without_redoing_or_duplicating(data_dir, tmp_path, capsys):
    assert suite.main(_args(data_dir, tmp_path), launcher=FakeLauncher(kill_after=3)) == 130
    assert "interrupted: 3 run(s) finished this time" in capsys.readouterr().err
    assert len(_rows(tmp_path)) == 3
    with open(tmp_path / "out.jsonl", "a") as f:  # killed in the middle of writing a fourth row
        f.write('{"dataset": "toy", "method": "lightgbm", "se')

    fake = FakeLauncher()
    assert suite.main(_args(data_dir, tmp_path), launcher=fake) == 0
    assert fake.calls == [("toy", "lightgbm")] + [(("toy2"), m) for m in ("ce", "genre2", "riemann", "lightgbm")]
    rows = _rows(tmp_path)  # every line parses: the partial one was cut off
    keys = [row_key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 8

    again = FakeLauncher()
    assert suite.main(_args(data_dir, tmp_path), launcher=again) == 0
    assert again.calls == [] and len(_rows(tmp_path)) == 8


def test_a_lost_ce_checkpoint_is_retrained_by_the_first_dependent_without_a_new_ce_row(data_dir, tmp_path):
    args = _args(data_dir, tmp_path, methods="ce,genre2,ntl_mse", extra=["--datasets=toy"])
    first = FakeLauncher(kill_after=1)  # CE's row lands, then the suite stops
    assert suite.main(args, launcher=first) == 130
    assert suite.ce_checkpoint_present(str(tmp_path / "runs" / "cpu" / "toy" / "seed0"))
    shutil.rmtree(tmp_path / "runs")  # a new machine: the rows are committed, the workroot is not

    fake = FakeLauncher()
    assert suite.main(args, launcher=fake) == 0
    assert fake.calls == [("toy", "genre2"), ("toy", "ntl_mse")]  # no second CE job or row
    assert "--config.phases=ce,rl,eval" in fake.commands[0]  # the first dependent restores CE ...
    assert "--config.phases=token,eval" in fake.commands[1]  # ... the next one finds it
    assert [r["method"] for r in _rows(tmp_path)] == ["ce", "genre2", "ntl_mse"]


def test_failures_are_rows_and_dependents_of_a_failed_ce_are_not_launched(data_dir, tmp_path):
    fake = FakeLauncher(fail={("toy", "riemann"), ("toy2", "ce")}, no_entry={("toy", "lightgbm")})
    assert suite.main(_args(data_dir, tmp_path), launcher=fake) == 0
    rows = {(r["dataset"], r["method"]): r for r in _rows(tmp_path)}
    assert len(rows) == 8
    assert rows[("toy", "riemann")]["status"] == "failed"
    assert rows[("toy", "riemann")]["error"] == "error: boom in riemann" and rows[("toy", "riemann")]["returncode"] == 2
    assert rows[("toy", "lightgbm")]["status"] == "failed" and "no 'lightgbm' entry" in rows[("toy", "lightgbm")]["error"]
    assert rows[("toy2", "ce")]["error"] == "error: boom in ce"
    assert rows[("toy2", "genre2")]["status"] == "failed" and "ce failed" in rows[("toy2", "genre2")]["error"]
    assert ("toy2", "genre2") not in fake.calls and ("toy2", "riemann") in fake.calls  # heads need no CE

    # Failed jobs are not retried by default; --retry_failed re-runs them and the new rows win.
    assert suite.main(_args(data_dir, tmp_path), launcher=FakeLauncher()) == 0
    assert len(_rows(tmp_path)) == 8
    retry = FakeLauncher()
    assert suite.main(_args(data_dir, tmp_path, extra=["--retry_failed"]), launcher=retry) == 0
    assert sorted(retry.calls) == sorted([("toy", "riemann"), ("toy", "lightgbm"), ("toy2", "ce"), ("toy2", "genre2")])
    rows = _rows(tmp_path)
    assert len(rows) == 12 and suite.pending_jobs(
        suite.list_jobs(["toy", "toy2"], [0], ["ce", "genre2", "riemann", "lightgbm"], "cpu"), rows, True) == []


def test_dry_run_and_bad_dataset(data_dir, tmp_path, capsys):
    assert suite.main(_args(data_dir, tmp_path, extra=["--dry_run"]), launcher=FakeLauncher()) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 8 and "--config.phases=ce,eval" in out[0]
    assert not os.path.exists(tmp_path / "out.jsonl")
    assert suite.main(_args(data_dir, tmp_path, extra=["--datasets=missing"]), launcher=FakeLauncher()) == 2
    capsys.readouterr()
    assert suite.main(_args(data_dir, tmp_path, methods="ce,xgboost"), launcher=FakeLauncher()) == 2
    assert capsys.readouterr().err.startswith("error: method: unknown method 'xgboost'")


def test_parallel_workers_keep_each_workdir_in_order_and_resume(data_dir, tmp_path):
    fake = FakeLauncher()
    assert suite.main(_args(data_dir, tmp_path, extra=["--workers=2"]), launcher=fake) == 0
    rows = _rows(tmp_path)
    assert sorted(row_key(r) for r in rows) == sorted(
        (d, m, 0, "cpu") for d in ("toy", "toy2") for m in ("ce", "genre2", "riemann", "lightgbm"))
    for dataset in ("toy", "toy2"):  # within a workdir: the serial order, CE first
        assert [m for d, m in fake.calls if d == dataset] == ["ce", "genre2", "riemann", "lightgbm"]
        assert [r["method"] for r in rows if r["dataset"] == dataset] == ["ce", "genre2", "riemann", "lightgbm"]

    # An interrupt in one worker stops the others before their next job; a resume finishes the rest once.
    (tmp_path / "out.jsonl").unlink()
    assert suite.main(_args(data_dir, tmp_path, extra=["--workers=2"]), launcher=FakeLauncher(kill_after=3)) == 130
    assert len(_rows(tmp_path)) <= 3
    assert suite.main(_args(data_dir, tmp_path, extra=["--workers=2"]), launcher=FakeLauncher()) == 0
    keys = [row_key(r) for r in _rows(tmp_path)]
    assert len(keys) == len(set(keys)) == 8


def test_each_worker_owns_one_gpu(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(launches, "visible_gpus", lambda environ=None: ["0", "3", "5"])
    fake, busy, lock = FakeLauncher(), set(), threading.Lock()

    def on_one_gpu(cmd, log_path, cwd):
        assert cmd[0] == "env" and cmd[1].startswith("CUDA_VISIBLE_DEVICES=")
        gpu = cmd[1].split("=")[1]
        with lock:
            assert gpu not in busy, "two launches on one GPU"
            busy.add(gpu)
        time.sleep(0.05)
        try:
            return fake(cmd[2:], log_path, cwd)
        finally:
            with lock:
                busy.discard(gpu)

    assert suite.main(_args(data_dir, tmp_path, extra=["--workers=2"]), launcher=on_one_gpu) == 0
    used = {r["command"].split()[1] for r in _rows(tmp_path)}
    assert used <= {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=3"} and len(_rows(tmp_path)) == 8
    assert suite.main(_args(data_dir, tmp_path, extra=["--workers=4"]), launcher=fake) == 2  # 3 GPUs


def test_workdir_groups_and_devices_in_rows(tmp_path):
    jobs = suite.list_jobs(["a", "b"], [0, 1], ["ce", "remax"], "cpu")
    groups = suite.workdir_groups(jobs)
    assert [[(j.dataset, j.seed, j.method) for j in g] for g in groups] == [
        [(d, s, "ce"), (d, s, "remax")] for d in ("a", "b") for s in (0, 1)]
    results = {"phases": {"ce": _entry("ce")}}
    row = suite.build_row(jobs[0], str(tmp_path), ["x"], 1.0, results, {"versions": {}, "devices": ["cuda:0"]})
    assert row["devices"] == ["cuda:0"]
    assert "devices" not in suite.build_row(jobs[0], str(tmp_path), ["x"], 1.0, results, {"versions": {}})


def test_paper_protocol_names_missing_rows_and_refuses_malformed_values(data_dir, tmp_path, capsys):
    header = "dataset,learning_rate,base,digits,d_model,nhead,num_decoder_layers,dim_feedforward,mlp_hidden\n"
    (data_dir / "authors_hparams.csv").write_text(header + "toy,1e-4,8,4,256,4,3,1024,256\n")
    args = ["--protocol=paper", *_args(data_dir, tmp_path, extra=["--dry_run"])[1:]]
    assert suite.main(args, launcher=FakeLauncher()) == 0
    err = capsys.readouterr().err
    assert "has no row for toy2; those use the experiments/configs/tabular.py:paper defaults" in err
    (data_dir / "authors_hparams.csv").write_text(header + "toy,1e-4,eight,4,256,4,3,1024,256\n")
    assert suite.main(args, launcher=FakeLauncher()) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "dataset toy, column base" in err[0]
    (data_dir / "authors_hparams.csv").write_text(header + "toy,1e-4,8,4.5,256,4,3,1024,256\n")
    assert suite.main(args, launcher=FakeLauncher()) == 2
    assert "dataset toy, column digits: expected a positive integer, got '4.5'" in capsys.readouterr().err


def test_a_launch_that_cannot_start_is_a_failed_row(tmp_path):
    def no_interpreter(cmd, log_path, cwd):
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    job = suite.Job("toy", 0, "genre2", "cpu")
    row = suite.launch_row(job, ["/missing/python", "launch.py"], str(tmp_path), str(tmp_path / "x.log"), no_interpreter)
    assert row["status"] == "failed" and row["error"].startswith("could not launch: [Errno 2]")
    assert "/missing/python" in row["error"]


def test_shards_of_a_plan_are_disjoint_cover_it_and_keep_each_workdir_whole():
    jobs = suite.list_jobs([f"d{i}" for i in range(12)], [0, 1, 2], ["genre2", "remax", "riemann"], "paper")
    for n in (2, 3, 5):
        shards = [[j for j in jobs if suite.in_shard(j.workdir_key[:2], (k, n))] for k in range(n)]
        keys = [j.key for shard in shards for j in shard]
        assert sorted(keys) == sorted(j.key for j in jobs) and len(set(keys)) == len(keys)  # a partition
        owners = {}
        for k, shard in enumerate(shards):
            assert shard, (k, n)  # 36 workdirs: every shard gets some
            for j in shard:
                assert owners.setdefault(j.workdir_key, k) == k  # CE and its methods on one machine
        # a group's shard reads the group alone: a smaller plan assigns its groups alike
        assert all(suite.in_shard(("d3", 1), (k, n)) == (owners[("d3", 1, "paper")] == k) for k in range(n))
    assert suite.parse_shard("1/4") == (1, 4) and suite.parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            suite.parse_shard(bad)
    assert suite.shard_path("results/x.jsonl", (1, 4)) == "results/x.shard-1-of-4.jsonl"


def test_two_shards_write_two_row_files_that_read_together_as_the_whole_study(data_dir, tmp_path, capsys):
    from experiments import summarize
    extra = ["--seeds=0,1,2", "--methods=ce,genre2"]
    for k in (0, 1):
        assert suite.main(_args(data_dir, tmp_path, extra=[*extra, f"--shard={k}/2"]), launcher=FakeLauncher()) == 0
    files = [tmp_path / f"out.shard-{k}-of-2.jsonl" for k in (0, 1)]
    shards = [[json.loads(line) for line in open(f)] for f in files]
    assert all(shards) and not (tmp_path / "out.jsonl").exists()
    assert not {row_key(r) for r in shards[0]} & {row_key(r) for r in shards[1]}
    assert sorted(row_key(r) for s in shards for r in s) == sorted(
        (d, m, s, "cpu") for d in ("toy", "toy2") for s in (0, 1, 2) for m in ("ce", "genre2"))
    assert suite.row_files(str(tmp_path / "out.jsonl")) == [str(tmp_path / "out.jsonl"), *map(str, files)]
    assert summarize.main([*map(str, files), f"--out={tmp_path / 'table'}"]) == 0
    with open(tmp_path / "table" / "per_dataset.csv") as f:
        assert len(f.read().splitlines()) > 1
