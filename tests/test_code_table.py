"""The code-metric pipeline end to end (tiny config: CE, GenRe², pointwise head, eval) and its table."""
import json
import os

import numpy as np

import launch
from conftest import write_code_rows
from experiments import code_table
from experiments.configs import code_metrics


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
