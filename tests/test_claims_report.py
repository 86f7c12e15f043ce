"""The claim-study report: RL rows paired with their own CE, bootstrap intervals, the written files."""
import json

import numpy as np

from experiments import claims_report
from fakes import claim_row
from genre_jax import runlog


def test_each_rl_run_is_compared_with_the_ce_it_started_from(tmp_path):
    rows = [claim_row("a", 0, "claims/tokenizer/ce", "ce", 0.50, 0.70),
            claim_row("a", 0, "claims/tokenizer/ce-n4x4", "ce", 0.60, 0.60),
            claim_row("a", 0, "claims/tokenizer/remax@n4x4@1of8", "remax", 0.65, 0.55, cov=0.4),
            claim_row("a", 0, "claims/tokenizer/remax@1of8", "remax", 0.52, 0.69),
            claim_row("a", 0, "claims/tokenizer/grpo@n4x4@1of8", "grpo", 0.1, 0.9, status="failed")]
    runs = {(r["variant"], r["budget"]): r for r in claims_report.paired_runs(rows)}
    assert set(runs) == {("remax@n4x4", "1of8"), ("remax", "1of8")}  # failed rows are left out
    assert np.isclose(runs[("remax@n4x4", "1of8")]["d_r2"], 0.05)  # against ce-n4x4, not ce
    assert np.isclose(runs[("remax", "1of8")]["d_rmse"], -0.01)
    assert runs[("remax@n4x4", "1of8")]["ce_cov90"] == 0.8 and runs[("remax@n4x4", "1of8")]["cov90"] == 0.4

    retrained = {**claim_row("a", 0, "", "", 0.56, 0.66), "one_sample_rmse": 0.9}  # a CE trained again elsewhere
    own = {**claim_row("a", 0, "claims/tokenizer/remax@n4x4@1of3", "remax", 0.65, 0.55), "ce": retrained,
           "one_sample_rmse": 0.7}
    run, = [r for r in claims_report.paired_runs(rows + [own]) if r["budget"] == "1of3"]
    assert np.isclose(run["d_r2"], 0.09) and run["ce_rmse_1"] == 0.9 and run["rmse_1"] == 0.7
    assert run["ce_row_r2"] == 0.60 and runs[("remax@n4x4", "1of8")]["ce_row_r2"] == 0.60
    text = claims_report.markdown(claims_report.summary([run]), [run], "x")
    assert "a seed 0: CE row R² 0.6000, retrained 0.5600 (1 run)" in text
    assert "retrained" not in claims_report.markdown([], [runs[("remax@n4x4", "1of8")]], "x")
    sharp = runs[("remax@n4x4", "1of8")]  # per dataset: ΔR², then the raw coverage CE -> RL with T*
    text = claims_report.markdown(claims_report.summary([sharp]), [sharp], "x")
    assert "| a | 0 | +0.0500 |" in text and "| a | 0 | 0.80 → 0.40 (T* 2) |" in text


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_runs():
    rng = np.random.default_rng(0)
    small = claims_report.bootstrap_ci(rng.normal(0.03, 0.02, 8))
    large = claims_report.bootstrap_ci(rng.normal(0.03, 0.02, 200))
    for mean, low, high in (small, large):
        assert low < mean < high
    assert large[2] - large[1] < small[2] - small[1]
    assert 0.025 < large[0] < 0.035
    mean, low, high = claims_report.bootstrap_ci([0.1])
    assert mean == 0.1 and np.isnan(low)


def test_the_report_writes_table_csv_and_plot(tmp_path):
    rows = [claim_row(d, 0, "claims/budget/ce", "ce", 0.5, 0.7) for d in ("a", "b")]
    rows += [claim_row(d, 0, f"claims/budget/genre2@reward@{b}", "genre2", 0.5 + dr, 0.7 - dr)
             for d, dr in (("a", 0.01), ("b", 0.03)) for b in ("cpu", "1of8")]
    path = tmp_path / "budget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert claims_report.main([str(path), f"--out={tmp_path / 'out' / 'budget'}"]) == 0
    table = (tmp_path / "out" / "budget.md").read_text()
    assert "| genre2@reward | 1/8 | 2 (2) | +0.0200 [+0.0100, +0.0300]" in table
    assert "0.80 → 0.80 → 0.88 / 0.90" in table
    assert (tmp_path / "out" / "budget.png").stat().st_size > 10_000
    assert len((tmp_path / "out" / "budget.csv").read_text().splitlines()) == 5
    assert claims_report.main([str(tmp_path / "missing.jsonl"), "--out=x"]) == 2
    # --datasets: every variant over the same datasets, and the command says so
    assert claims_report.main([str(path), f"--out={tmp_path / 'out' / 'b'}", "--datasets=b"]) == 0
    table = (tmp_path / "out" / "b.md").read_text()
    assert "| genre2@reward | 1/8 | 1 (1) | +0.0300" in table and "--datasets=b`" in table
    assert claims_report.main([str(path), "--out=x", "--datasets=b,zz"]) == 2


def test_matched_budgets_use_only_the_runs_present_at_every_budget():
    rows = [claim_row(d, 0, "claims/budget/ce", "ce", 0.5, 0.7) for d in ("a", "b")]
    rows += [claim_row("a", 0, f"claims/budget/remax@reward@{b}", "remax", 0.5 + dr, 0.7) for b, dr in
             (("cpu", 0.01), ("1", 0.05))]
    rows += [claim_row("b", 0, "claims/budget/remax@reward@cpu", "remax", 0.4, 0.8)]  # b has no 1x run
    rows += [claim_row("b", 0, "claims/budget/genre2@reward@cpu", "genre2", 0.6, 0.6)]  # one budget only
    runs = claims_report.paired_runs(rows)
    same = {(m["variant"], m["budget"]): m for m in claims_report.matched(runs)}
    assert set(same) == {("remax@reward", "cpu"), ("remax@reward", "1")}
    assert np.isclose(same[("remax@reward", "cpu")]["d_r2"], 0.01)  # b's -0.1 at cpu is left out
    assert same[("remax@reward", "1")]["n"] == 1 and same[("remax@reward", "1")]["datasets"] == "a"
    table = {t["budget"]: t for t in claims_report.summary(runs) if t["variant"] == "remax@reward"}
    assert np.isclose(table["cpu"]["d_r2"][0], -0.045)  # the summary averages whatever each budget has


def test_ratios_to_ce_are_geometric_means_and_a_zero_ce_is_left_out():
    rows = [claim_row(d, 0, "claims/budget/ce", "ce", 0.5, 0.7, crps=c) for d, c in (("a", 0.2), ("b", 0.4), ("c", 0.0))]
    rows += [claim_row(d, 0, "claims/budget/remax@reward@1of8", "remax", 0.5, 0.7, crps=c)
             for d, c in (("a", 0.4), ("b", 0.2), ("c", 0.1))]
    (t,) = claims_report.summary(claims_report.paired_runs(rows))
    assert np.isclose(t["crps_ratio"], 1.0)  # ratios 2 and 0.5; c's CE of 0 is no ratio


def test_cost_counts_each_launch_once_and_every_launch_of_the_runs_here(tmp_path):
    board = runlog.Board(str(tmp_path / "run" / "tensorboard" / "rl" / "genre2"))
    for epoch in range(2):  # this run's epochs: 2 h, where its row records its last launch's 0.5 h
        board.scalars(epoch, {"time/epoch_s": 3600.0})
    board.close()
    here = str(tmp_path / "run")
    rows = [{"wall_time_s": 360.0, "status": "failed", "workdir": here},  # then retried in the same workdir
            {"wall_time_s": 1800.0, "workdir": here}, {"wall_time_s": 1800.0, "workdir": here},  # both rules
            {"wall_time_s": 3600.0, "status": "failed", "workdir": str(tmp_path / "gone")},
            {"wall_time_s": 900.0, "reused_from": "claims/budget/ce"}, {"wall_time_s": None}]
    assert claims_report.cost(rows) == {"launches": 4, "hours": 1.6, "reused": 1, "read": 1, "read_hours": 0.6,
                                        "epoch_hours": 2.0}
    assert claims_report.cost_line(rows) == (
        "Cost: 4 launches, 1.60 h of launch wall time (1 more rows copied, nothing launched); a run resumed after "
        "an interruption counts only its last launch. For the 1 runs whose workdirs were on the machine that wrote "
        "this, their epochs (training and validation, each launch's first-epoch compiles included; not loading, "
        "checkpoint writes or evaluation) over every launch took 2.00 h where their rows record 0.60 h.")


def test_datasets_weigh_the_same_however_many_seeds_they_have():
    values, groups = [1.0, 1.0, 1.0, 0.0], ["a", "a", "a", "b"]
    mean, low, high = claims_report.bootstrap_ci(values, groups=groups)
    assert mean == 0.5  # not 0.75: a's three seeds are one dataset
    assert low == 0.0 and high == 1.0  # two datasets: the resampled means are 0, 0.5 or 1
    rng = np.random.default_rng(1)
    one = rng.normal(0.02, 0.01, 6)
    assert claims_report.bootstrap_ci(one, groups=list("abcdef")) == claims_report.bootstrap_ci(one)  # one seed each
    # seeds that agree within a dataset are not independent runs: the interval stays as wide as the datasets'
    datasets = rng.normal(0.02, 0.02, 4)
    runs = np.repeat(datasets, 3) + rng.normal(0, 1e-4, 12)
    clustered = claims_report.bootstrap_ci(runs, groups=np.repeat(list("abcd"), 3).tolist())
    naive = claims_report.bootstrap_ci(runs)
    assert clustered[2] - clustered[1] > 1.4 * (naive[2] - naive[1])


def test_seed_spread_is_pooled_over_datasets_with_several_seeds(tmp_path):
    runs = [{"dataset": d, "d_r2": v} for d, v in (("a", 0.0), ("a", 0.2), ("b", 0.1), ("b", 0.1), ("c", 0.5))]
    sd, n = claims_report.seed_sd(runs)
    assert n == 2 and np.isclose(sd, np.sqrt((np.var([0.0, 0.2], ddof=1) + 0.0) / 2))
    assert np.isnan(claims_report.seed_sd(runs[-1:])[0])
    rows = [claim_row(d, s, "claims/budget/ce", "ce", 0.5, 0.7) for d in ("a", "b") for s in (0, 1)]
    rows += [claim_row(d, s, "claims/budget/remax@reward@1of8", "remax", 0.5 + dr, 0.7, cov=c)
             for d, s, dr, c in (("a", 0, 0.01, 0.2), ("a", 1, 0.03, 0.4), ("b", 0, 0.05, 0.9))]
    (t,) = claims_report.summary(claims_report.paired_runs(rows))
    assert np.isclose(t["d_r2"][0], 0.035) and np.isclose(t["cov90"], 0.6)  # a's mean (0.02, 0.3) weighs as b
    text = claims_report.markdown([t], claims_report.paired_runs(rows), "cmd")
    assert "| ΔR² | seed SD (datasets) | ΔRMSE (z) |" in text and f"| {np.std([0.01, 0.03], ddof=1):.4f} (1) |" in text


def test_interval_and_log_scores_get_columns_only_where_rows_have_them():
    old = [claim_row("a", 0, "claims/budget/ce", "ce", 0.5, 0.7), claim_row("a", 0, "claims/budget/remax@reward@1of8", "remax", 0.6, 0.6)]
    text = claims_report.markdown(claims_report.summary(claims_report.paired_runs(old)), [], "x")
    assert "log score" not in text and "interval score" not in text  # rows before these scores: no column
    new = json.loads(json.dumps(old))
    for row, (interval, log) in zip(new, ((3.0, 1.5), (2.0, None))):  # the RL row sampled: no log score
        row["test"]["distribution"].update(pinball=0.1, interval_score={"0.9": interval}, log_score=log)
    row["calibration"]["temperature"]["splits"]["test"]["interval_score"] = {"0.9": 1.75}
    run, = claims_report.paired_runs(new)
    assert (run["ce_interval_90"], run["interval_90"], run["interval_90_T"], run["ce_log_score"]) == (3.0, 2.0, 1.75, 1.5)
    assert np.isnan(run["log_score"]) and np.isnan(run["log_score_T"])
    text = claims_report.markdown(claims_report.summary([run]), [run], "x")
    assert "| 3.0000 → 2.0000 → 1.7500 | 1.5000 → - → - |" in text
    # a dataset whose CE row predates the scores: CE → RL over only the datasets that have both
    other = json.loads(json.dumps(new))
    for row in other:
        row["dataset"] = "b"
    other[0]["test"]["distribution"].pop("interval_score")
    other[1]["test"]["distribution"]["interval_score"] = {"0.9": 9.0}
    runs = claims_report.paired_runs(new + other)
    text = claims_report.markdown(claims_report.summary(runs), runs, "x")
    assert "| 3.0000 → 2.0000 → 1.7500 (1 of 2 datasets) |" in text


def test_runs_whose_temperature_sits_at_its_grids_top_are_flagged():
    old_top = claim_row("a", 0, "claims/budget/remax@reward@1", "remax", 0.6, 0.6)
    old_top["calibration"]["temperature"]["value"] = 4.0  # written before the flag: the old grid's top
    new_top = claim_row("b", 0, "claims/budget/remax@reward@1", "remax", 0.6, 0.6)
    new_top["calibration"]["temperature"].update(value=16.0, grid_top=16.0, at_grid_top=True)
    new_inside = claim_row("c", 0, "claims/budget/remax@reward@1", "remax", 0.6, 0.6)
    new_inside["calibration"]["temperature"].update(value=4.0, grid_top=16.0, at_grid_top=False)
    rows = [claim_row(d, 0, "claims/budget/ce", "ce", 0.5, 0.7) for d in "abc"] + [old_top, new_top, new_inside]
    runs = claims_report.paired_runs(rows)
    assert [(r["dataset"], r["T_top"], r["T_grid_top"]) for r in runs] == [("a", True, 4.0), ("b", True, 16.0),
                                                                         ("c", False, 16.0)]
    text = claims_report.markdown(claims_report.summary(runs), runs, "x")
    assert ("T* at the top of its grid (2 runs of 3;" in text and "a seed 0 remax@reward 1x (grid to 4)" in text
            and "b seed 0 remax@reward 1x (grid to 16)" in text and "c seed 0" not in text)
    text = claims_report.markdown(claims_report.summary(runs[2:]), runs[2:], "x")
    assert "No run's T* sits at its grid's top (grid to 16)." in text
