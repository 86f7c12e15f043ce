"""summarize.py on a synthetic JSONL with known RMSEs: ranks, wins/ties/losses, means, outputs."""
import csv
import json
import os

import numpy as np
import pytest

from experiments import summarize
from experiments.rows import latest_rows, read_rows

# Test RMSE per (dataset, method); None = the run failed. Ranks by hand:
#   d1: genre2 1, ce 2, lightgbm 3     d2: lightgbm 1, ce and genre2 tie at 2.5
#   d3: genre2 1, ce 2, lightgbm 3 (0.70005 vs 0.7: a loss in rank, a tie within 1e-4)
#   d4: genre2 failed -> left out of means and ranks
RMSE = {
    ("d1", "ce"): 0.5, ("d1", "genre2"): 0.4, ("d1", "lightgbm"): 0.6,
    ("d2", "ce"): 0.3, ("d2", "genre2"): 0.3, ("d2", "lightgbm"): 0.2,
    ("d3", "ce"): 0.7, ("d3", "genre2"): 0.6, ("d3", "lightgbm"): 0.70005,
    ("d4", "ce"): 0.1, ("d4", "genre2"): None, ("d4", "lightgbm"): 0.2,
}


def _split(rmse, median_offset=0.0):
    point = {"rmse": rmse, "mae": 0.8 * rmse, "r2": 1 - rmse ** 2, "spearman": 0.9, "rmse_original": 2 * rmse}
    return {"mean": point, "median": {**point, "rmse": rmse + median_offset}, "greedy": point,
            "distribution": {"crps": 0.5 * rmse, "coverage_90": 0.8}}


def _row(dataset, method, rmse, seed=0, protocol="cpu", workdir=""):
    base = {"dataset": dataset, "method": method, "seed": seed, "protocol": protocol, "wall_time_s": 10.0,
            "workdir": workdir}
    if rmse is None:
        return {**base, "status": "failed", "error": "error: boom"}
    return {**base, "status": "ok", "test": _split(rmse, 0.01), "val": _split(rmse), "num_samples": 8}


@pytest.fixture
def jsonl(tmp_path):
    rows = [_row("d1", "ce", None)]  # a failed first attempt, superseded by the retry below
    rows += [_row(d, m, r, workdir=str(tmp_path / "runs" / "cpu" / d / "seed0")) for (d, m), r in RMSE.items()]
    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"dataset": "d5", "meth')  # truncated tail
    return path


def test_ranks_wins_and_means(jsonl):
    latest = latest_rows(read_rows(str(jsonl)), "cpu")
    records = summarize.collect(latest, "mean")
    s = summarize.summarize(records, ["ce", "genre2", "lightgbm"], "ce", 1e-4)
    assert s["complete"] == ["d1", "d2", "d3"] and s["excluded"] == {"d4": ["genre2"]}
    pm = s["per_method"]
    assert pm["ce"]["avg_rank"] == pytest.approx(6.5 / 3)
    assert pm["genre2"]["avg_rank"] == pytest.approx(1.5)
    assert pm["lightgbm"]["avg_rank"] == pytest.approx(7 / 3)
    assert (pm["genre2"]["wins"], pm["genre2"]["ties"], pm["genre2"]["losses"]) == (2, 1, 0)
    assert (pm["lightgbm"]["wins"], pm["lightgbm"]["ties"], pm["lightgbm"]["losses"]) == (1, 1, 1)
    assert "wins" not in pm["ce"]
    assert pm["ce"]["rmse"] == pytest.approx(0.5)
    assert pm["genre2"]["rmse"] == pytest.approx(1.3 / 3)
    assert pm["lightgbm"]["mae"] == pytest.approx(0.8 * (0.6 + 0.2 + 0.70005) / 3)
    assert pm["genre2"]["r2"] == pytest.approx(1 - (0.16 + 0.09 + 0.36) / 3)
    assert pm["ce"]["datasets"] == 3 and pm["ce"]["wall_min"] == pytest.approx(30 / 60)
    assert s["total_wall_h"] == pytest.approx(12 * 10 / 3600)
    assert s["ranks"][("d2", "ce")] == s["ranks"][("d2", "genre2")] == 2.5

    # d3's lightgbm is 5e-5 above ce: a tie at the default tolerance, a loss at a tighter one.
    strict = summarize.summarize(records, ["ce", "genre2", "lightgbm"], "ce", 1e-6)["per_method"]["lightgbm"]
    assert (strict["wins"], strict["ties"], strict["losses"]) == (1, 0, 2)
    # Median aggregation reads the other block (+0.01 everywhere, ranks unchanged).
    med = summarize.summarize(summarize.collect(latest, "median"), ["ce", "genre2"], "ce")
    assert med["per_method"]["ce"]["rmse"] == pytest.approx(0.51)
    # Without the failing method every dataset is complete.
    assert summarize.summarize(records, ["ce", "lightgbm"])["complete"] == ["d1", "d2", "d3", "d4"]


def test_seeds_are_averaged_and_a_failed_seed_makes_the_dataset_incomplete():
    rows = [_row("a", "ce", 0.2, seed=0), _row("a", "ce", 0.4, seed=1), _row("a", "genre2", 0.1, seed=0),
            _row("a", "genre2", None, seed=1), _row("b", "ce", 0.5, seed=0), _row("b", "genre2", 0.5, seed=0)]
    records = summarize.collect(latest_rows(rows), "mean")
    assert records[("a", "ce")]["rmse"] == pytest.approx(0.3) and records[("a", "ce")]["seeds"] == 2
    assert records[("a", "ce")]["rmse_sd"] == pytest.approx(np.sqrt(0.02))  # sd of (0.2, 0.4), ddof 1
    assert np.isnan(records[("b", "ce")]["rmse_sd"])  # one seed: no spread
    assert records[("a", "genre2")]["status"] == "failed"
    # b has only seed 0 rows, so one seed is all it needs
    assert summarize.summarize(records, ["ce", "genre2"])["complete"] == ["b"]
    with pytest.raises(ValueError, match="--protocol"):
        summarize.pick_protocol(rows + [_row("a", "ce", 0.2, protocol="paper")], None)


def _write_predictions(workdir, method, rng, noise):
    target = rng.normal(size=50).astype(np.float32)
    samples = target[:, None] + noise * rng.normal(size=(50, 8)).astype(np.float32)
    os.makedirs(os.path.join(workdir, "eval", method), exist_ok=True)
    np.savez(os.path.join(workdir, "eval", method, "predictions_test.npz"), samples_z=samples,
             greedy_z=target + noise * 0.5, target_z=target)


def test_cli_writes_table_csv_and_plots(jsonl, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for d in ("d1", "d2", "d3"):
        for method, noise in (("ce", 0.5), ("genre2", 0.2)):
            _write_predictions(str(tmp_path / "runs" / "cpu" / d / "seed0"), method, rng, noise)
    out = tmp_path / "summary"
    assert summarize.main([str(jsonl), f"--out={out}", f"--workroot={tmp_path / 'runs'}"]) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in printed
    assert "3 of 4 datasets" in table and "d4 (genre2)" in table
    assert "| genre2 | 0.4333 | 0.3467 |" in table and "| 1.50 | 2/1/0 | 3 | 0.5 |" in table
    assert "| ce | 0.5000 |" in table and "| — | 3 | 0.5 |" in table
    # 12 counted rows x 10 s (ce's failed first attempt is superseded, d4's failed genre2 counts)
    assert "failures included: 0.03 h." in table
    with open(out / "per_dataset.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 12
    d4 = next(r for r in lines if r["dataset"] == "d4" and r["method"] == "genre2")
    assert d4["status"] == "failed" and d4["complete"] == "False" and d4["error"] == "error: boom"
    for name in ("r2_by_method.png", "genre2_vs_ce_rmse.png", "error_vs_samples.png", "distribution_by_method.png"):
        assert (out / name).stat().st_size > 1000, name

    latest = latest_rows(read_rows(str(jsonl)))
    curves = summarize.error_vs_samples(latest, ["d1", "d2", "d3"], ["ce", "genre2"], str(tmp_path / "runs"))
    assert curves["counts"] == [1, 2, 4, 8] and curves["runs"] == 3
    assert curves["curves"]["ce"][0] > curves["curves"]["ce"][-1]  # averaging samples reduces the noise
    assert curves["curves"]["genre2"][0] < curves["curves"]["ce"][0]


def test_plots_skip_absent_methods_and_missing_predictions(jsonl, tmp_path, capsys):
    out = tmp_path / "only_lgbm"
    assert summarize.main([str(jsonl), f"--out={out}", "--methods=lightgbm"]) == 0
    printed = capsys.readouterr().out
    assert "plot skipped: genre2_vs_ce_rmse.png" in printed and "plot skipped: error_vs_samples.png" in printed
    assert (out / "r2_by_method.png").exists() and not (out / "genre2_vs_ce_rmse.png").exists()
    assert summarize.main([str(jsonl), f"--out={out}", "--methods=xgboost"]) == 2


def test_several_results_files_are_read_as_one(jsonl, tmp_path):
    lines = jsonl.read_text().splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(lines[:6]))
    second.write_text("".join(lines[6:]))
    out_one, out_two = tmp_path / "one", tmp_path / "two"
    assert summarize.main([str(jsonl), f"--out={out_one}"]) == 0
    assert summarize.main([str(first), str(second), f"--out={out_two}"]) == 0
    assert (out_one / "table.md").read_text() == (out_two / "table.md").read_text()
    assert summarize.main([str(tmp_path / "empty.jsonl"), f"--out={tmp_path / 'x'}"]) == 2


def test_seed_spread_column_and_dataset_filter(tmp_path, capsys):
    rows = [_row("a", "ce", 0.2, seed=0), _row("a", "ce", 0.4, seed=1), _row("a", "genre2", 0.1, seed=0),
            _row("a", "genre2", 0.1, seed=1), _row("b", "ce", 0.5, seed=0), _row("b", "genre2", 0.3, seed=0)]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "s"
    assert summarize.main([str(path), f"--out={out}"]) == 0
    table = (out / "table.md").read_text()
    # ce: a's sd 0.1414 (b has one seed and no spread); genre2: identical seeds, sd 0
    assert "| RMSE seed sd |" in table and "| 0.1414 |" in table.splitlines()[-2] and "| 0.0000 |" in table
    assert summarize.main([str(path), f"--out={out}", "--datasets=b"]) == 0
    table_b = (out / "table.md").read_text()
    assert "1 of 1 datasets" in table_b and "RMSE seed sd" not in table_b and "| ce | 0.5000 |" in table_b
    capsys.readouterr()
    assert summarize.main([str(path), f"--out={out}", "--datasets=b,zz"]) == 2
    assert "--datasets: ['zz']" in capsys.readouterr().err


def test_methods_default_to_the_registry_order_then_unknown_names(tmp_path):
    found = ["zz_new", "lightgbm", "genre2", "remax", "ce", "rloo"]
    path = tmp_path / "order.jsonl"
    path.write_text("".join(json.dumps(_row("a", m, 0.5)) + "\n" for m in found))
    out = tmp_path / "o"
    assert summarize.main([str(path), f"--out={out}"]) == 0
    listed = [line.split(" | ")[0][2:] for line in (out / "table.md").read_text().splitlines()[-len(found):]]
    assert listed == ["ce", "remax", "genre2", "rloo", "lightgbm", "zz_new"]


def test_split_metrics_carries_the_new_distribution_scores_and_old_rows_read_nan():
    new = {"mean": {"rmse": 0.5}, "distribution": {"crps": 0.2, "coverage_90": 0.9, "pinball": 0.1,
                                                   "interval_score": {"0.5": 1.0, "0.9": 2.5}, "log_score": 1.3}}
    got = summarize.split_metrics(new, "mean")
    assert (got["pinball"], got["interval_score_90"], got["log_score"]) == (0.1, 2.5, 1.3)
    sampled = {"mean": {"rmse": 0.5}, "distribution": {**new["distribution"], "log_score": None}}
    assert np.isnan(summarize.split_metrics(sampled, "mean")["log_score"])  # samples: no log score
    old = summarize.split_metrics(_split(0.5), "mean")  # a row written before these scores
    assert old["crps"] == 0.25 and all(np.isnan(old[k]) for k in ("pinball", "interval_score_90", "log_score"))
    assert set(summarize.DIST_METRICS) <= set(summarize.CSV_FIELDS)
