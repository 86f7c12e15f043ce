"""The claim-study runner with a fake launcher: budgets, one CE per (dataset, seed, tokenizer), RL
workdirs started from a copy of it, rows, resume."""
import json
import os
import shutil
import threading

import numpy as np
import pytest

from experiments import claims
from experiments.configs import claims as claims_config
from fakes import write_talent_dataset


class FakeLaunch:
    """Writes what launch.py would: a CE checkpoint folder for a CE launch, a results.json entry."""

    def __init__(self, digest="ce0"):
        self.commands, self.digest = [], digest

    def __call__(self, cmd, log_path, cwd):
        flags = dict(f[2:].split("=", 1) for f in cmd if f.startswith("--") and "=" in f)
        workdir, phases = flags["workdir"], flags["config.phases"].split(",")
        self.commands.append(flags)
        if "ce" in phases:
            os.makedirs(os.path.join(workdir, "ce", "best", "3"), exist_ok=True)
        else:
            assert os.path.isdir(os.path.join(workdir, "ce", "best", "3"))  # RL starts from the copied CE
        method = "ce" if "ce" in phases else flags.get("config.rl.method", flags.get("config.token.method"))
        names = [method]
        if flags.get("config.rl.both_selections") == "True":  # the other rule's entry too (genre_jax/pipeline.py)
            other = "reward" if flags.get("config.rl.selection") == "aggregate_rmse" else "aggregate_rmse"
            names.append(f"{method}@{other}")
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump({"versions": {"cpu": f"cpu of {self.digest}"}}, f)
        entries = {}
        for i, name in enumerate(names):
            r2 = {"ce": 0.75 if self.digest == "retrained" else 0.8}.get(method, 0.85 - 0.05 * i)  # which run made it
            split = {agg: {"rmse": 0.4, "r2": r2} for agg in ("mean", "median", "greedy")}
            entries[name] = {"splits": {"val": split, "test": split}, "num_samples": 128,
                             "calibration": {"temperature": {"value": 1.5}},
                             "stamp": {"params_digest": self.digest if method == "ce" else f"{name}-from-{self.digest}"}}
            os.makedirs(os.path.join(workdir, "eval", name), exist_ok=True)  # one draw off by 0.3 or 0.4 z (x 2)
            np.savez(os.path.join(workdir, "eval", name, "predictions_test.npz"), target_z=np.zeros(2),
                     samples_z=np.array([[0.3, -0.3], [0.4, -0.4]]) * (i + 1))
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"phases": entries}, f)
        return 0


@pytest.mark.parametrize("study", claims_config.STUDIES)
def test_every_study_plans_its_variants(study, tmp_path, capsys):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    config = claims_config.get_config(study)
    assert all("." not in name for name in config.variants)  # ConfigDict refuses dotted keys
    assert claims.main([f"--study={study}", f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--dry_run",
                        f"--out={tmp_path / 'rows.jsonl'}", f"--workroot={tmp_path / 'runs'}"]) == 0
    printed = capsys.readouterr().out
    runs = printed.count("--config.phases=rl,eval") + printed.count("--config.phases=token,eval")
    budgets = len(config.budgets.split(","))
    # a pair is one run; an opt-in variant (a pilot) runs only where --variants names it
    assert runs == (len(config.variants) - len(config.get("paired") or {}) - len(config.opt_in)) * budgets
    assert printed.count("#   and claims/") == len(config.get("paired") or {}) * budgets
    assert "--config.rl.keep_start=False" in printed
    if study == "expert":
        assert "--config.rl.expert_weight=0.05" in printed and "genre2@lambda0p05@1of8" in printed


def test_one_ce_per_dataset_seed_and_tokenizer_then_resume(tmp_path, capsys):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    args = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--study=tokenizer", "--budgets=1/8,cpu",
            "--variants=remax@n4x4,grpo_mu4@n4x4,remax@ieee", f"--out={tmp_path / 'rows.jsonl'}",
            f"--workroot={tmp_path / 'runs'}"]
    fake = FakeLaunch()
    assert claims.main(args, launcher=fake) == 0
    ce_runs = [c["workdir"] for c in fake.commands if c["config.phases"] == "ce,eval"]
    root = tmp_path / "runs" / "tokenizer" / "toy" / "seed0"
    assert ce_runs == [str(root / "ce-n4x4"), str(root / "ce-ieee")]
    rl = [c for c in fake.commands if c["config.phases"] == "rl,eval"]
    assert [os.path.basename(c["workdir"]) for c in rl] == [  # every CE first, then RL in plan order
        "remax@n4x4@1of8", "grpo_mu4@n4x4@1of8", "remax@ieee@1of8", "remax@n4x4@cpu", "grpo_mu4@n4x4@cpu",
        "remax@ieee@cpu"]
    assert [c["config.phases"] for c in fake.commands][:2] == ["ce,eval", "ce,eval"]
    assert rl[1]["config.rl.ppo_epochs"] == "4" and rl[1]["config.rl.method"] == "grpo"
    assert rl[2]["config.tokenizer.name"] == "ieee"
    rows = [json.loads(line) for line in open(tmp_path / "rows.jsonl")]
    assert [r["protocol"] for r in rows][:3] == ["claims/tokenizer/ce-n4x4", "claims/tokenizer/ce-ieee",
                                                 "claims/tokenizer/remax@n4x4@1of8"]
    assert len(rows) == 8 and rows[1]["calibration"] == {"temperature": {"value": 1.5}}

    shutil.rmtree(tmp_path / "runs")  # a new machine: nothing to redo but the rows that are missing
    again = FakeLaunch()
    assert claims.main(args, launcher=again) == 0 and again.commands == []
    with open(tmp_path / "rows.jsonl") as f:
        kept = f.readlines()[:-1]  # the last run's row was lost: CE comes back first, without a new CE row
    with open(tmp_path / "rows.jsonl", "w") as f:
        f.writelines(kept)
    third = FakeLaunch()
    assert claims.main(args, launcher=third) == 0
    assert [c["config.phases"] for c in third.commands] == ["ce,eval", "rl,eval"]
    assert len(open(tmp_path / "rows.jsonl").readlines()) == 8
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 launch(es) this time, 0 failed")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    assert claims.main([f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--variants=remax@n9"]) == 2
    assert "error: --variants: ['remax@n9'] not in study budget" in capsys.readouterr().err
    assert claims.main([f"--data_dir={tmp_path / 'data'}", "--datasets=nope"]) == 2
    assert "error: dataset folder(s) ['nope'] not in" in capsys.readouterr().err


def test_workers_run_launches_side_by_side_and_skip_the_runs_of_a_failed_ce(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(claims.launches, "visible_gpus", lambda: [])  # a CPU host, whatever runs the tests
    monkeypatch.setattr(claims.launches, "tpu_present", lambda: False)
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    args = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--study=tokenizer", "--budgets=1/8",
            "--variants=remax@n4x4,grpo@n4x4,remax@ieee,grpo@ieee", f"--out={tmp_path / 'rows.jsonl'}",
            f"--workroot={tmp_path / 'runs'}", "--workers=2"]
    fake, barrier = FakeLaunch(), threading.Barrier(2, timeout=30)

    def launch(cmd, log_path, cwd):
        flags = dict(f[2:].split("=", 1) for f in cmd if f.startswith("--") and "=" in f)
        if flags["config.phases"] == "ce,eval":
            barrier.wait()  # both CEs are running at once, or this times out
            if flags["workdir"].endswith("ce-ieee"):
                return 1
        return fake(cmd, log_path, cwd)

    assert claims.main(args, launcher=launch) == 0
    rows = [json.loads(line) for line in open(tmp_path / "rows.jsonl")]
    by_protocol = {r["protocol"].split("/")[-1]: r["status"] for r in rows}
    assert by_protocol == {"ce-n4x4": "ok", "ce-ieee": "failed", "remax@n4x4@1of8": "ok", "grpo@n4x4@1of8": "ok"}
    out = capsys.readouterr().out
    assert "FAILED  toy seed0 ce-ieee" in out and out.splitlines()[-1].startswith("4 launch(es) this time, 1 failed")


def test_expert_study_copies_the_budget_studys_identical_runs(tmp_path, capsys):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    common = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", f"--workroot={tmp_path / 'runs'}"]
    budget_rows = tmp_path / "claims" / "budget.jsonl"
    assert claims.main(common + ["--study=budget", "--budgets=1/8", "--variants=remax@reward",
                                 f"--out={budget_rows}"], launcher=FakeLaunch()) == 0
    fake = FakeLaunch()
    expert_rows = tmp_path / "claims" / "expert.jsonl"
    assert claims.main(common + ["--study=expert", f"--out={expert_rows}"], launcher=fake) == 0
    assert [c["config.phases"] for c in fake.commands] == ["rl,eval"] * 4  # no CE, no λ = 0: both copied
    assert [c["config.rl.expert_weight"] for c in fake.commands] == ["0.01", "0.05", "0.1", "0.2"]
    rows = {r["protocol"].split("/")[-1]: r for r in map(json.loads, open(expert_rows))}
    assert rows["ce"]["reused_from"] == "claims/budget/ce" and rows["ce"]["method"] == "ce"
    lam0 = rows["genre2@lambda0@1of8"]
    assert lam0["reused_from"] == "claims/budget/remax@reward@1of8" and lam0["method"] == "genre2"
    assert lam0["protocol"] == "claims/expert/genre2@lambda0@1of8" and lam0["workdir"].endswith("remax@reward@1of8")
    assert "reused_from" not in rows["genre2@lambda0p05@1of8"]
    assert os.path.isdir(tmp_path / "runs" / "expert" / "toy" / "seed0" / "ce" / "ce" / "best" / "3")
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "4 launch(es) this time, 0 failed, 2 row(s) reused from budget")
    again = FakeLaunch()
    assert claims.main(common + ["--study=expert", f"--out={expert_rows}"], launcher=again) == 0
    assert again.commands == [] and len(open(expert_rows).readlines()) == 6


def test_a_failed_ce_stays_skipped_until_retried_and_repeated_arguments_run_once(tmp_path, capsys):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    args = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy,toy", "--seeds=0,0", "--study=budget", "--budgets=1/8",
            "--variants=remax@reward", f"--out={tmp_path / 'rows.jsonl'}", f"--workroot={tmp_path / 'runs'}"]
    calls = []

    def failing(cmd, log_path, cwd):
        calls.append(cmd)
        return 1

    assert claims.main(args, launcher=failing) == 0 and len(calls) == 1  # the CE, once; its RL run is not launched
    os.makedirs(tmp_path / "runs" / "budget" / "toy" / "seed0" / "ce" / "ce" / "best" / "3")  # a partial checkpoint
    again = FakeLaunch()
    assert claims.main(args, launcher=again) == 0 and again.commands == []  # a later session does not start RL
    assert "skipped toy seed0 ce: its CE failed" in capsys.readouterr().err
    retry = FakeLaunch()
    assert claims.main(args + ["--retry_failed"], launcher=retry) == 0
    assert [c["config.phases"] for c in retry.commands] == ["ce,eval", "rl,eval"]


def test_reuse_replaces_a_partial_ce_and_never_pairs_copied_rows_with_an_own_ce(tmp_path):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    write_talent_dataset(tmp_path / "data", "toy2", n=200)
    common = [f"--data_dir={tmp_path / 'data'}", f"--workroot={tmp_path / 'runs'}", "--study=expert",
              f"--out={tmp_path / 'claims' / 'expert.jsonl'}"]
    # toy2: the expert study trained its own CE before the budget study had one; toy: its CE was cut short
    assert claims.main(common + ["--datasets=toy2", "--variants=genre2@lambda0p01"], launcher=FakeLaunch()) == 0
    partial = tmp_path / "runs" / "expert" / "toy" / "seed0" / "ce" / "ce" / "best" / "1"
    os.makedirs(partial)
    assert claims.main([f"--data_dir={tmp_path / 'data'}", "--datasets=toy,toy2", f"--workroot={tmp_path / 'runs'}",
                        "--study=budget", "--budgets=1/8", "--variants=remax@reward",
                        f"--out={tmp_path / 'claims' / 'budget.jsonl'}"], launcher=FakeLaunch()) == 0
    fake = FakeLaunch()
    assert claims.main(common + ["--datasets=toy,toy2", "--variants=genre2@lambda0,genre2@lambda0p01"],
                       launcher=fake) == 0
    assert not partial.exists()  # replaced by the budget study's finished checkpoint
    launched = [(c["config.dataset"], c["config.rl.expert_weight"]) for c in fake.commands]
    assert launched == [("toy", "0.01"), ("toy2", "0.0")]  # toy2's λ = 0 runs from its own CE, not copied
    rows = [json.loads(line) for line in open(tmp_path / "claims" / "expert.jsonl")]
    copied = {(r["dataset"], r["protocol"].split("/")[-1]) for r in rows if r.get("reused_from")}
    assert copied == {("toy", "ce"), ("toy", "genre2@lambda0@1of8")}


def test_a_checkpoint_that_cannot_be_copied_is_that_runs_failed_row_not_a_traceback(tmp_path, capsys, monkeypatch):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    common = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", f"--workroot={tmp_path / 'runs'}"]
    assert claims.main(common + ["--study=budget", "--budgets=1/8", "--variants=remax@reward",
                                 f"--out={tmp_path / 'claims' / 'budget.jsonl'}"], launcher=FakeLaunch()) == 0

    def disk_full(src, dst):
        raise OSError(28, "No space left on device", dst)

    monkeypatch.setattr(claims.shutil, "copytree", disk_full)
    fake = FakeLaunch()
    expert_rows = tmp_path / "claims" / "expert.jsonl"
    assert claims.main(common + ["--study=expert", "--variants=genre2@lambda0,genre2@lambda0p01",
                                 f"--out={expert_rows}"], launcher=fake) == 0
    assert fake.commands == []  # neither λ = 0's copy nor λ = 0.01's launch sits on a CE that is not there
    rows = [json.loads(line) for line in open(expert_rows)]
    assert [(r["method"], r["status"]) for r in rows] == [("ce", "failed")]
    assert rows[0]["error"].startswith("could not copy the CE checkpoint from ") and "No space left" in rows[0]["error"]
    assert not os.path.exists(tmp_path / "runs" / "expert" / "toy" / "seed0" / "ce" / "ce")
    out = capsys.readouterr().out
    assert "FAILED  toy seed0 ce: could not copy the CE checkpoint" in out and "reused" not in out


def test_an_rl_row_records_the_ce_it_started_from_even_when_a_retrained_ce_differs_from_its_row(tmp_path):
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    common = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", f"--workroot={tmp_path / 'runs'}"]
    args = common + ["--variants=remax@reward", f"--out={tmp_path / 'budget.jsonl'}"]
    assert claims.main(args + ["--budgets=cpu"], launcher=FakeLaunch("first")) == 0
    shutil.rmtree(tmp_path / "runs")  # another machine, whose CE training comes out otherwise
    os.makedirs(tmp_path / "runs" / "budget" / "toy" / "seed0" / "ce" / "ce" / "best" / "3")  # and was stopped
    retrain = FakeLaunch("retrained")
    assert claims.main(args + ["--budgets=cpu,1/8"], launcher=retrain) == 0
    assert [c["config.phases"] for c in retrain.commands] == ["ce,eval", "rl,eval"]  # a stopped CE is no CE
    rows = [json.loads(line) for line in open(tmp_path / "budget.jsonl")]
    assert [(r["protocol"], r["params_digest"]) for r in rows] == [  # the retrained CE writes no row
        ("claims/budget/ce", "first"), ("claims/budget/remax@reward@cpu", "remax-from-first"),
        ("claims/budget/remax@reward@1of8", "remax-from-retrained")]
    assert [r["ce"]["params_digest"] for r in rows[1:]] == ["first", "retrained"]
    assert rows[0]["test"]["mean"]["r2"] == 0.8 and rows[2]["ce"]["test"]["mean"]["r2"] == 0.75
    assert rows[2]["ce"]["versions"] == {"cpu": "cpu of retrained"}
    assert rows[2]["ce"]["calibration"]["temperature"]["value"] == 1.5
    assert rows[2]["one_sample_rmse"] == pytest.approx(0.125 ** 0.5)  # mean of 0.09, 0.09, 0.16, 0.16
    assert rows[2]["ce"]["one_sample_rmse"] == rows[0]["one_sample_rmse"] == pytest.approx(0.125 ** 0.5)

    expert = FakeLaunch("unused")  # the expert study copies that retrained CE, and says so in its rows
    assert claims.main(common + ["--study=expert", f"--out={tmp_path / 'expert.jsonl'}"], launcher=expert) == 0
    assert "ce,eval" not in [c["config.phases"] for c in expert.commands]
    launched = [json.loads(line) for line in open(tmp_path / "expert.jsonl")][2:]
    assert len(launched) == 4 and {r["ce"]["params_digest"] for r in launched} == {"retrained"}


def test_both_rules_are_one_run_and_the_controls_run_with_the_rl_recipe(tmp_path, capsys):
    """A paired variant (the other selection rule) is read from its source's run; ce_continued runs as
    an RL method; ntl_mse as a token-level one with the same optimizer for the same updates."""
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    args = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--budgets=1", f"--out={tmp_path / 'rows.jsonl'}",
            f"--workroot={tmp_path / 'runs'}",
            "--variants=genre2@reward,genre2@aggregate_rmse,ce_continued@reward,ntl_mse"]
    fake = FakeLaunch()
    assert claims.main(args, launcher=fake) == 0
    runs = {os.path.basename(c["workdir"]): c for c in fake.commands}
    assert sorted(runs) == ["ce", "ce_continued@reward@1", "genre2@reward@1", "ntl_mse@1"]  # no genre2@aggregate_rmse
    genre2, token = runs["genre2@reward@1"], runs["ntl_mse@1"]
    assert genre2["config.rl.both_selections"] == "True" and genre2["config.rl.keep_start"] == "False"
    assert runs["ce_continued@reward@1"]["config.rl.method"] == "ce_continued"
    assert token["config.phases"] == "token,eval" and token["config.token.method"] == "ntl_mse"
    # 200 rows: 64 % train = 128, one update per epoch; 100 epochs at 1x, no early stop, the RL optimizer
    assert (token["config.token.max_epochs"], token["config.token.patience"]) == ("100", "100")
    shared = ("learning_rate", "warmup_steps", "weight_decay", "lr_floor", "grad_clip", "batch_size")
    assert [token[f"config.token.{k}"] for k in shared] == [genre2[f"config.rl.{k}"] for k in shared]
    rows = {r["protocol"].rpartition("/")[2]: r for r in map(json.loads, open(tmp_path / "rows.jsonl"))}
    assert set(rows) == {"ce", "genre2@reward@1", "genre2@aggregate_rmse@1", "ce_continued@reward@1", "ntl_mse@1"}
    pair, source = rows["genre2@aggregate_rmse@1"], rows["genre2@reward@1"]
    assert pair["method"] == "genre2" and pair["workdir"] == source["workdir"] and pair["status"] == "ok"
    assert pair["results_entry"] == "genre2@aggregate_rmse" and "results_entry" not in source
    assert (pair["test"]["mean"]["r2"], source["test"]["mean"]["r2"]) == (pytest.approx(0.80), 0.85)  # its own entry
    assert pair["params_digest"] == "genre2@aggregate_rmse-from-ce0" and pair["ce"] == source["ce"]
    assert pair["one_sample_rmse"] == pytest.approx(2 * source["one_sample_rmse"])  # its own predictions
    assert rows["ntl_mse@1"]["method"] == "ntl_mse" and rows["ntl_mse@1"]["ce"]["params_digest"] == "ce0"
    out = capsys.readouterr().out
    assert "ok      toy seed0 genre2@aggregate_rmse@1" in out and out.splitlines()[-1].startswith("4 launch(es)")

    with open(tmp_path / "rows.jsonl") as f:  # the pair's row lost, its source's kept: it runs on its own
        kept = [line for line in f if "genre2@aggregate_rmse@1" not in line]
    with open(tmp_path / "rows.jsonl", "w") as f:
        f.writelines(kept)
    again = FakeLaunch()
    assert claims.main(args, launcher=again) == 0
    assert [(os.path.basename(c["workdir"]), c["config.rl.selection"]) for c in again.commands] == [
        ("genre2@aggregate_rmse@1", "aggregate_rmse")]


def test_the_distribution_study_leaves_out_exact_runs_the_tokenizer_refuses(tmp_path, capsys):
    config = claims_config.get_config("distribution")
    assert {config.variants[n][0] for n in config.variants} == {"crps_loo", "exact_crps", "remax", "genre2"}
    assert config.budgets == "1/8" and config.reuse_from == "budget"
    # the refused runs (claims_commands.refusal) are named on stderr and left out, the others run
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    (tmp_path / "data" / "authors_hparams.csv").write_text("dataset,base,digits\ntoy,4,8\n")
    assert claims.main(["--study=distribution", f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--dry_run",
                        f"--out={tmp_path / 'rows.jsonl'}", f"--workroot={tmp_path / 'runs'}"]) == 0
    out, err = capsys.readouterr()
    plan = [n for n in config.variants if n not in config.opt_in]  # the KL pilot only where named
    assert len(config.opt_in) == len(claims_config.KL_WEIGHTS) and "exact_crps_kl1@reward" not in plan
    num_exact = sum(config.variants[n][0] == "exact_crps" for n in plan)
    assert num_exact == 2  # without and with the expert
    assert out.count("--config.phases=rl,eval") == len(plan) - num_exact
    assert "exact_crps" not in out and err.count("left out toy seed0 exact_crps") == num_exact
    # named, an opt-in variant is planned like any other
    (tmp_path / "data" / "authors_hparams.csv").write_text("dataset,base,digits\ntoy,2,4\n")
    assert claims.main(["--study=distribution", f"--data_dir={tmp_path / 'data'}", "--datasets=toy", "--dry_run",
                        "--variants=exact_crps_kl1@reward", f"--out={tmp_path / 'rows.jsonl'}",
                        f"--workroot={tmp_path / 'runs'}"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("--config.phases=rl,eval") == 1 and "--config.rl.kl_weight=1.0" in out


def test_two_shards_split_the_study_by_dataset_seed_and_ce(tmp_path, capsys):
    from experiments import suite
    write_talent_dataset(tmp_path / "data", "toy", n=200)
    write_talent_dataset(tmp_path / "data", "toy2", n=250, seed=1)
    common = [f"--data_dir={tmp_path / 'data'}", "--datasets=toy,toy2", "--seeds=0,1,2", "--study=tokenizer",
              "--budgets=cpu", "--variants=remax@n4x4,remax@ieee", f"--out={tmp_path / 'rows.jsonl'}",
              f"--workroot={tmp_path / 'runs'}"]
    for k in (0, 1):
        assert claims.main(common + [f"--shard={k}/2"], launcher=FakeLaunch()) == 0
    shards = [[json.loads(line) for line in open(tmp_path / f"rows.shard-{k}-of-2.jsonl")] for k in (0, 1)]
    keys = [(r["dataset"], r["seed"], r["method"], r["protocol"]) for s in shards for r in s]
    assert all(shards) and len(set(keys)) == len(keys) == 2 * 3 * 4  # 12 CEs and 12 RL runs, each once
    for k, s in enumerate(shards):  # every row of a (dataset, seed, CE) in the shard that owns it
        for r in s:
            ce_tag = "ce-" + ("ieee" if "ieee" in r["protocol"] else "n4x4")
            assert suite.in_shard((r["dataset"], r["seed"], ce_tag), (k, 2)), r["protocol"]
