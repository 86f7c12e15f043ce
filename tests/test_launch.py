"""End to end: launch on the bundled dataset, and the command line's one-line errors."""
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np

import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_end_to_end_on_bundled_dataset(tiny_run):
    workdir, summary = tiny_run
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results == json.loads(json.dumps(summary))
    test = results["phases"]["ce"]["splits"]["test"]
    for agg in ("mean", "median", "greedy"):
        assert set(test[agg]) == {"rmse", "mae", "r2", "spearman", "kendall", "rmse_original"}
        assert all(np.isfinite(v) for v in test[agg].values())
    assert test["mean"]["r2"] > 0.3  # two tiny epochs already learn cpu_act's structure
    with open(os.path.join(workdir, "config.json")) as f:
        written = json.load(f)
    assert written["seed"] == 0 and written["versions"]["jax"] == jax.__version__
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert written["versions"]["cpu"] and written["versions"]["cpu_cores"] == cores
    assert written["config"]["model"]["d_model"] == 16
    assert set(results["phases"]) == {"ce", "genre2"}
    assert not any("wall_time_s" in e for e in results["phases"].values())  # timings live apart
    with open(os.path.join(workdir, "timings.json")) as f:
        assert set(json.load(f)["phases"]) == {"ce", "genre2"}
    assert results["phases"]["genre2"]["selection"]["best_epoch"] in (-1, 0)


def test_cli_prints_one_line_and_exits_2(tmp_path, toy_data_dir):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "GENRE_JAX_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        [f"--config.data_dir={toy_data_dir}", "--config.dataset=missing"],
        ["--config.no_such_key=1"],
        [f"--config.data_dir={toy_data_dir}", "--config.dataset=toy", "--config.model.num_heads=3"],
    ]
    for i, args in enumerate(runs):
        workdir = tmp_path / f"cli{i}"
        proc = subprocess.run([sys.executable, os.path.join(REPO, "launch.py"),
                               f"--config={REPO}/experiments/configs/tabular.py:tiny", f"--workdir={workdir}", *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode != 0, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.strip() and "Warning" not in l]
        assert len(lines) == 1, proc.stderr
        assert not workdir.exists()



def test_only_closed_event_loop_reports_are_silenced():
    seen = []
    hook = launch._without_closed_loop(lambda *args: seen.append(args))
    hook(RuntimeError, RuntimeError("Event loop is closed"), None)  # sys.excepthook's arguments
    hook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))  # sys.unraisablehook's
    assert seen == []
    other = RuntimeError("something else")
    hook(RuntimeError, other, None)
    hook(types.SimpleNamespace(exc_value=ValueError("x")))
    assert len(seen) == 2 and seen[0][1] is other
