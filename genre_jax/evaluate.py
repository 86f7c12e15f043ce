"""Evaluation: S samples per input at a temperature, plus a greedy decode, scored in z units.

Results per split: mean-, median- and greedy-aggregated metrics (``metrics.prediction_metrics``)
and the distribution's CRPS and 90% central-interval coverage. Raw predictions are saved as .npz
so later analyses (error vs number of samples, calibration) need no re-sampling.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from genre_jax import metrics, parallel, sampling


def make_predict_fn(task, num_samples: int, temperature: float, mesh):
    model, tokenizer = task.model, task.tokenizer

    def predict(params, x_BF, key):
        return sampling.predict(model, params, x_BF, key, tokenizer, num_samples, temperature)

    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(predict, in_shardings=(rep, data, rep), out_shardings=(data, data))


def predict_split(predict_fn, params, x_NF: np.ndarray, key, batch_size: int, mesh):
    """(samples_NS, greedy_N) for every row; padding rows are dropped, one compiled shape."""
    samples, greedy = [], []
    for i, batch in enumerate(parallel.padded_batches({"x": x_NF}, batch_size)):
        s, g = predict_fn(params, parallel.shard_batch(batch["x"], mesh), jax.random.fold_in(key, i))
        keep = batch["weight"] > 0
        samples.append(parallel.to_host(s)[keep])
        greedy.append(parallel.to_host(g)[keep])
    return np.concatenate(samples), np.concatenate(greedy)


def evaluate(config, task, params, y_std: float, mesh, out_dir: str, method: str) -> dict:
    """Scores decoder ``params`` on the configured splits; writes predictions under ``out_dir``."""
    cfg = config.eval
    predict_fn = make_predict_fn(task, int(cfg.num_samples), float(cfg.temperature), mesh)
    header = {"method": method, "num_samples": int(cfg.num_samples), "temperature": float(cfg.temperature)}
    return score_splits(config, predict_fn, params, task.arrays, y_std, mesh, out_dir, header)


def score_splits(config, predict_fn, params, arrays, y_std: float, mesh, out_dir: str, header: dict) -> dict:
    """Runs ``predict_fn`` (params, x_BF, key) -> (samples_BS, point_B) over ``config.eval.splits`` and
    scores it: the one evaluation loop behind every model kind (decoders, regression heads)."""
    start = time.time()
    batch_size = parallel.round_up(int(config.eval.batch_size), mesh.size)
    key = jax.random.fold_in(jax.random.key(int(config.seed)), 1)
    result = {**header, "splits": {}}
    os.makedirs(out_dir, exist_ok=True)
    for i, split in enumerate(s.strip() for s in config.eval.splits.split(",")):
        split_arrays = arrays[split]
        samples_NS, greedy_N = predict_split(predict_fn, params, split_arrays["x"], jax.random.fold_in(key, i),
                                             batch_size, mesh)
        scores = metrics.prediction_metrics(samples_NS, greedy_N, split_arrays["z"], y_std)
        scores["distribution"] = {"crps": metrics.crps(samples_NS, split_arrays["z"]),
                                  "coverage_90": metrics.interval_coverage(samples_NS, split_arrays["z"], 0.9)}
        result["splits"][split] = scores
        if parallel.is_main_process():
            np.savez_compressed(os.path.join(out_dir, f"predictions_{split}.npz"),
                                samples_z=samples_NS.astype(np.float32), greedy_z=greedy_N,
                                target_z=split_arrays["z"])
    result["wall_time_s"] = round(time.time() - start, 2)
    return result


def format_table(results: dict) -> str:
    """A small fixed-width table of every evaluated phase, split and aggregation."""
    cols = ("rmse", "mae", "r2", "spearman", "rmse_original")
    lines = [f"{'phase':<10}{'split':<6}{'agg':<8}" + "".join(f"{c:>14}" for c in cols)]
    for phase, res in results.items():
        for split, scores in res["splits"].items():
            for agg in metrics.AGGREGATIONS:
                lines.append(f"{phase:<10}{split:<6}{agg:<8}" + "".join(f"{scores[agg][c]:>14.4f}" for c in cols))
    return "\n".join(lines)
