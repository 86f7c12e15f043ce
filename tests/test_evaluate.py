import numpy as np

from genre_jax import evaluate, metrics


def test_format_table_lists_every_split_and_aggregation():
    scores = {agg: {"rmse": 0.5, "mae": 0.4, "r2": 0.75, "spearman": 0.9, "rmse_original": 5.0}
              for agg in metrics.AGGREGATIONS}
    table = evaluate.format_table({"ce": {"splits": {"val": scores, "test": scores}}})
    lines = table.splitlines()
    assert len(lines) == 1 + 2 * len(metrics.AGGREGATIONS)
    assert lines[0].split() == ["phase", "split", "agg", "rmse", "mae", "r2", "spearman", "rmse_original"]
    assert lines[-1].split()[:3] == ["ce", "test", "greedy"] and float(lines[-1].split()[5]) == 0.75
    assert np.isclose(float(lines[1].split()[-1]), 5.0)
