"""The code-metric pipeline end to end (tiny config: CE, GenRe², pointwise head, eval) and its table."""
import json
import os

import numpy as np

import launch
from experiments import code_table
from experiments.configs import code_metrics
from fakes import write_code_rows


def test_code_pipeline_end_to_end_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRE_JAX_TFDS_DIR", str(tmp_path / "tfds"))
    (tmp_path / "data").mkdir()
    write_code_rows(tmp_path / "data" / "progs.jsonl.gz", n=240)
    config = code_metrics.get_config("memory-tiny")
    config.data_dir, config.dataset, config.phases = str(tmp_path / "data"), "progs", "ce,rl,head,eval"
    workdir = str(tmp_path / "run")
    launch.run(config, workdir)
    phases = json.load(open(os.path.join(workdir, "results.json")))["phases"]
    assert set(phases) == {"ce", "genre2", "pointwise"}
    assert phases["genre2"]["num_samples"] == config.eval.num_samples
    written = json.load(open(os.path.join(workdir, "config.json")))
    assert written["identity"]["code"] == {"target": "peak_memory_bytes", "max_bytes": 64}
    assert written["tokenizer"]["name"] == "ieee"
    rows = code_table.table_rows({"memory": phases})
    assert [r["method"] for r in rows] == ["ce", "genre2", "pointwise"]
    assert all(np.isfinite([r["spearman"], r["kendall"], r["rmse"]]).all() for r in rows)
    table = code_table.markdown(rows)
    assert table.count("\n") == 4 and "median of 8" in table and "| point |" in table


def _fake_launch(calls):
    """Records each launch.py command and writes the results.json entries its phases would."""
    def run(cmd, check):
        calls.append(cmd[2:])
        flags = dict(f[2:].split("=", 1) for f in cmd if f.startswith("--") and "=" in f)
        test = {agg: {"spearman": 0.5, "kendall": 0.4, "rmse": 0.9} for agg in ("median", "greedy")}
        entry = {"splits": {"test": {**test, "distribution": {"crps": 0.1}}}, "num_samples": 8}
        trained = [flags[f"config.{kind}.method"] if f"config.{kind}.method" in flags else kind
                   for kind in flags["config.phases"].split(",")[:-1]]
        path = os.path.join(flags["workdir"], "results.json")
        phases = code_table.method_entries(flags["workdir"])
        os.makedirs(flags["workdir"], exist_ok=True)
        with open(path, "w") as f:
            json.dump({"phases": {**phases, **{m: entry for m in trained}}}, f)
    return run


def test_default_methods_launch_as_before_and_resume(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(code_table.subprocess, "run", _fake_launch(calls))
    args = ["--targets=memory", f"--workroot={tmp_path}", f"--out={tmp_path / 'table'}"]
    assert code_table.main(args) == 0
    config = f"--config={code_table.CONFIG}:memory-quick"
    assert calls == [[config, f"--workdir={tmp_path / 'memory'}", *flags] for flags in (
        ["--config.phases=ce,rl,eval", "--config.rl.method=genre2"],  # CE comes with the first RL method
        ["--config.phases=rl,eval", "--config.rl.method=remax"],
        ["--config.phases=head,eval", "--config.head.method=pointwise"])]
    with open(tmp_path / "table.json") as f:
        rows = json.load(f)["rows"]
    assert [(r["method"], r["aggregate"]) for r in rows] == [
        ("ce", "median"), ("remax", "median"), ("genre2", "median"), ("pointwise", "greedy")]
    assert code_table.main(args) == 0 and len(calls) == 3  # every pair is in results.json: nothing relaunched

    assert code_table.main(["--methods=remax,xgboost"]) == 2
    assert capsys.readouterr().err.startswith("error: --methods: unknown method 'xgboost'")
    listed = code_table.trains_ce([code_table.methods.get(n) for n in ("pointwise", "ce", "remax")])
    assert listed is None  # ce runs on its own before remax
