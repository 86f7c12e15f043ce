"""Evaluation: G samples per input at a temperature, plus a greedy decode, scored in z units.

Results per split: mean-, median- and greedy-aggregated metrics (``metrics.prediction_metrics``)
and the distribution's CRPS and 90% central-interval coverage. Raw predictions are saved as .npz
so later analyses (error vs number of samples, calibration) need no re-sampling.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from genre_jax import heads, metrics, parallel, sampling


def make_predict_fn(ctx, num_samples: int, temperature: float):
    """The decoder's jitted (params, x_BF, key) -> (samples_BG, greedy_B), rows split over devices."""
    model, tokenizer = ctx.model, ctx.tokenizer

    def predict(params, x_BF, key):
        return sampling.predict(model, params, x_BF, key, tokenizer, num_samples, temperature)

    return parallel.data_parallel(predict, ctx.mesh, batch_out=True)


def predict_split(predict_fn, params, x_NF: np.ndarray, key, batch_size: int, mesh):
    """(samples_NG, greedy_N) for every row; padding rows are dropped, one compiled shape."""
    samples, greedy = [], []
    for i, batch in enumerate(parallel.padded_batches({"x": x_NF}, batch_size)):
        s, g = predict_fn(params, parallel.shard_batch(batch["x"], mesh), jax.random.fold_in(key, i))
        keep = batch["weight"] > 0
        samples.append(parallel.to_host(s)[keep])
        greedy.append(parallel.to_host(g)[keep])
    return np.concatenate(samples), np.concatenate(greedy)


def evaluate(ctx, params, out_dir: str, method: str) -> dict:
    """Scores decoder ``params`` on the configured splits; writes predictions under ``out_dir``."""
    cfg = ctx.settings.eval
    predict_fn = make_predict_fn(ctx, cfg.num_samples, cfg.temperature)
    header = {"method": method, "num_samples": cfg.num_samples, "temperature": cfg.temperature}
    return score_splits(ctx, predict_fn, params, out_dir, header)


def score_splits(ctx, predict_fn, params, out_dir: str, header: dict) -> dict:
    """Runs ``predict_fn`` (params, x_BF, key) -> (samples_BG, point_B) over the configured splits and
    scores it: the one evaluation loop behind every model kind (decoders, regression heads)."""
    start = time.time()
    batch_size = parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)
    key = jax.random.fold_in(jax.random.key(ctx.seed), 1)
    result = {**header, "splits": {}}
    os.makedirs(out_dir, exist_ok=True)
    for i, split in enumerate(ctx.settings.eval.splits):
        split_arrays = ctx.arrays[split]
        samples_NG, greedy_N = predict_split(predict_fn, params, split_arrays["x"], jax.random.fold_in(key, i),
                                             batch_size, ctx.mesh)
        scores = metrics.prediction_metrics(samples_NG, greedy_N, split_arrays["z"], ctx.y_std)
        scores["distribution"] = {"crps": metrics.crps(samples_NG, split_arrays["z"]),
                                  "coverage_90": metrics.interval_coverage(samples_NG, split_arrays["z"], 0.9)}
        result["splits"][split] = scores
        if parallel.is_main_process():
            np.savez_compressed(os.path.join(out_dir, f"predictions_{split}.npz"),
                                samples_z=samples_NG.astype(np.float32), greedy_z=greedy_N,
                                target_z=split_arrays["z"])
    result["wall_time_s"] = round(time.time() - start, 2)
    return result


def evaluate_head(ctx, params, model, out_dir: str) -> dict:
    """A regression head in the same schema: greedy = its point prediction, mean/median over its samples."""
    head = ctx.settings.head
    spec = head.method.spec
    edges_E, values_C = heads.bin_layout(head, ctx.arrays["train"]["z"])

    def predict(params, x_BF, key):
        return heads.head_predict(spec, model, params, x_BF, key, head.num_samples, values_C, edges_E)

    predict_fn = parallel.data_parallel(predict, ctx.mesh, batch_out=True)
    header = {"method": head.method.name, "num_samples": head.num_samples, "temperature": 1.0}
    return score_splits(ctx, predict_fn, params, out_dir, header)


def format_table(results: dict) -> str:
    """A small fixed-width table of every evaluated phase, split and aggregation."""
    cols = ("rmse", "mae", "r2", "spearman", "rmse_original")
    lines = [f"{'phase':<10}{'split':<6}{'agg':<8}" + "".join(f"{c:>14}" for c in cols)]
    for phase, res in results.items():
        for split, scores in res["splits"].items():
            for agg in metrics.AGGREGATIONS:
                lines.append(f"{phase:<10}{split:<6}{agg:<8}" + "".join(f"{scores[agg][c]:>14.4f}" for c in cols))
    return "\n".join(lines)
