"""Claim (a)'s decision: the rule's verdicts, the t-interval, near-duplicates merged, controls paired."""
import json
import math

import numpy as np
import scipy.stats

from experiments import claim_a
from genre_jax import runlog


def test_the_verdicts_follow_the_written_rule():
    assert claim_a.verdict(0.001, 0.05) == "reproduced"  # excludes 0, reaches +0.034
    assert claim_a.verdict(0.04, 0.06) == "reproduced"  # lies above it
    assert claim_a.verdict(0.001, 0.03) == "a smaller effect"
    assert claim_a.verdict(-0.001, 0.05) == "not shown"
    assert claim_a.verdict(0.0, 0.05) == "not shown"  # touching 0 is not excluding it
    assert claim_a.verdict(-0.05, -0.001) == "reversed"
    assert claim_a.verdict(math.nan, math.nan) == "too few datasets"


def test_t_interval_and_merging_by_hand():
    x = [0.01, 0.03, -0.02, 0.05]
    mean, low, high = claim_a.t_interval(x)
    half = scipy.stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    np.testing.assert_allclose([mean, low, high], [0.0175, 0.0175 - half, 0.0175 + half], rtol=1e-12)
    values = {"Wine_Quality_red": 0.1, "wine+quality": 0.3, "cpu_act": 0.2, "boston": -0.1}
    assert sorted(claim_a.merged(values)) == sorted([0.2, 0.2, -0.1])


def _row(dataset, protocol, r2, ce_r2=None, best_epoch=None):
    row = {"dataset": dataset, "seed": 0, "method": "x", "protocol": f"claims/budget/{protocol}", "status": "ok",
           "test": {"mean": {"r2": r2, "rmse": 1 - r2}}, "selection": {"best_epoch": best_epoch}}
    if ce_r2 is not None:
        row["ce"] = {"test": {"mean": {"r2": ce_r2, "rmse": 1 - ce_r2}}}
    return row


def test_controls_are_paired_as_gains_over_each_runs_own_ce(tmp_path):
    rows = [_row("boston", "ce", 0.80), _row("boston", "genre2@reward@1", 0.85),
            _row("boston", "ce_continued@reward@1", 0.83, ce_r2=0.81),  # from a retrained CE
            _row("stock", "ce", 0.90), _row("stock", "genre2@reward@1", 0.89), _row("stock", "ntl_mse@1", 0.92),
            _row("stock", "genre2@reward@1of8", 0.99),  # another budget: not the rule's
            _row("boston", "ce_continued@aggregate_rmse@1", 0.84, ce_r2=0.81, best_epoch=4),
            _row("stock", "ce_continued@aggregate_rmse@1", 0.88, best_epoch=10)]
    path = tmp_path / "budget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_dataset = claim_a.gains(claim_a.read_rows(str(path)))
    np.testing.assert_allclose(claim_a.differences(by_dataset, "genre2@reward", "ce_continued@reward")["boston"],
                               0.05 - 0.02, rtol=1e-12)
    assert claim_a.retrained(by_dataset["boston"]["ce_continued@reward"])
    assert not claim_a.retrained(by_dataset["boston"]["genre2@reward"])
    table = {t["comparison"]: t for t in claim_a.decide(by_dataset)}
    assert table["GenRe² − CE"]["n"] == 2 and table["GenRe² − CE"]["up"] == 1
    np.testing.assert_allclose(table["GenRe² − CE"]["mean"], (0.05 - 0.01) / 2, rtol=1e-12)
    assert table["GenRe² − ntl_mse"]["n"] == 1 and table["GenRe² − ntl_mse"]["verdict"] == "too few datasets"
    mixed = table["GenRe² − ce_continued selected on validation RMSE *"]  # GenRe²'s rule against CE's own
    np.testing.assert_allclose(mixed["mean"], ((0.05 - 0.03) + (-0.01 + 0.02)) / 2, rtol=1e-12)
    assert claim_a.median_epoch(by_dataset, "ce_continued@aggregate_rmse") == "7"
    assert claim_a.median_epoch(by_dataset, "genre2@reward") == "-"  # no selection record
    out = tmp_path / "decision"
    assert claim_a.main([str(path), f"--out={out}"]) == 0
    text = (tmp_path / "decision.md").read_text()
    assert ("Status: **interim**: 2 of 21 datasets have the GenRe² row for GenRe² − CE; for the controls "
            "**interim**: 1 of 21 datasets have the ce_continued row, **interim**: 1 of 21 datasets have the "
            "ntl_mse row.") in text
    # gains +0.03 (boston, over its own CE 0.81) and -0.02 (stock): ± t(0.975, 1) · 0.0354 / √2 = ± 0.3177
    assert "| ce_continued@aggregate_rmse | 2 | +0.0050 [-0.3127, +0.3227] | 1/2 | 7 |" in text


def test_core_hours_count_each_run_of_the_decision_once_and_every_launch_of_its_epochs(tmp_path):
    def run(dataset, protocol, hours, workdir, seed=0):
        return {**_row(dataset, protocol, 0.5), "seed": seed, "wall_time_s": hours * 3600,
                "workdir": str(tmp_path / workdir)}

    rows = [run("boston", "ce", 0.1, "a/ce"), run("boston", "genre2@reward@1", 1.0, "a/g"),
            run("boston", "genre2@aggregate_rmse@1", 1.0, "a/g"),  # the other rule of the same run
            run("boston", "genre2@reward@1of8", 0.2, "a/g8"),  # another budget
            run("boston", "genre2@reward@1", 1.0, "b/g", seed=1),  # another seed
            run("not_in_the_rule", "genre2@reward@1", 1.0, "c/g")]
    board = runlog.Board(str(tmp_path / "a" / "g" / "tensorboard" / "rl" / "genre2"))  # the 1x run's epochs
    for epoch in range(3):
        board.scalars(epoch, {"time/epoch_s": 1800.0})
    board.close()
    hours = claim_a.core_hours(rows)
    assert hours.keys() == {"ce", "genre2"}
    assert hours["ce"]["launches"] == 1 and hours["genre2"]["launches"] == 1
    np.testing.assert_allclose([hours["ce"]["hours"], hours["genre2"]["hours"]], [0.1, 1.0], rtol=1e-12)
    # epochs of every launch: 1.5 h where the row records 1.0 h; the CE workdir is not on this machine
    assert {k: hours["genre2"][k] for k in ("read", "read_hours", "epoch_hours")} == dict(
        read=1, read_hours=1.0, epoch_hours=1.5)
    assert hours["ce"]["read"] == 0 and hours["ce"]["epoch_hours"] == 0.0
    text = claim_a.markdown({}, [], "cmd", hours)
    assert "1.1 core-hours; ce 1 launches 0.1 h, genre2 1 launches 1.0 h." in text
    assert "For the 1 runs whose" in text and "take 1.5 core-hours where their rows record 1.0" in text
