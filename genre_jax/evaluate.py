"""Evaluation: G samples per input at a temperature, plus a greedy decode, scored in z units; or,
with ``eval.decode = exact`` (``auto``: when the tokenizer allows at most ``eval.exact_max_sequences``
sequences), the decoder's exact distribution over every sequence (``exact.py``).

Results per split: mean-, median- and greedy-aggregated metrics (``metrics.prediction_metrics``)
and the distribution's CRPS and 90% central-interval coverage. Raw predictions are saved as .npz
so later analyses (error vs number of samples, calibration) need no re-sampling; an exact
evaluation saves the probabilities too, and samples drawn from them.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from genre_jax import exact, heads, metrics, parallel, sampling


def make_predict_fn(ctx, num_samples: int, temperature: float, decode: str = "sample"):
    """The decoder's jitted (params, x_BF, key) -> (samples_BG, greedy_B), rows split over devices;
    with ``decode="exact"``: (probs_BS over ``exact.all_sequences``, greedy_B)."""
    model, tokenizer = ctx.model, ctx.tokenizer

    def predict(params, x_BF, key):
        if decode == "exact":
            return exact.predict(model, params, x_BF, tokenizer, temperature)
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
    decode = exact.resolve_decode(cfg.decode, ctx.tokenizer, cfg.exact_max_sequences)
    predict_fn = make_predict_fn(ctx, cfg.num_samples, cfg.temperature, decode)
    header = {"method": method, "num_samples": cfg.num_samples, "temperature": cfg.temperature, "decode": decode}
    values_S = np.asarray(ctx.tokenizer.decode(exact.all_sequences(ctx.tokenizer))) if decode == "exact" else None
    return score_splits(ctx, predict_fn, params, out_dir, header, values_S)


def score_splits(ctx, predict_fn, params, out_dir: str, header: dict, exact_values_S=None) -> dict:
    """Runs ``predict_fn`` (params, x_BF, key) -> (samples_BG, point_B) over the configured splits and
    scores it: the one evaluation loop behind every model kind (decoders, regression heads). With
    ``exact_values_S`` the first output is each row's probability of those values instead."""
    start = time.time()
    batch_size = parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)
    key = jax.random.fold_in(jax.random.key(ctx.seed), 1)
    result = {**header, "splits": {}}
    os.makedirs(out_dir, exist_ok=True)
    for i, split in enumerate(ctx.settings.eval.splits):
        split_arrays = ctx.arrays[split]
        outputs_NG, greedy_N = predict_split(predict_fn, params, split_arrays["x"], jax.random.fold_in(key, i),
                                             batch_size, ctx.mesh)
        target_N, extra = split_arrays["z"], {}
        if exact_values_S is None:
            samples_NG = outputs_NG
            scores = metrics.prediction_metrics(samples_NG, greedy_N, target_N, ctx.y_std)
            scores["distribution"] = {"crps": metrics.crps(samples_NG, target_N),
                                      "coverage_90": metrics.interval_coverage(samples_NG, target_N, 0.9)}
        else:
            dist = metrics.Discrete(exact_values_S, outputs_NG)
            scores = metrics.exact_prediction_metrics(dist, greedy_N, target_N, ctx.y_std)
            scores["distribution"] = {"crps": dist.crps(target_N), "coverage_90": dist.coverage(target_N, 0.9)}
            samples_NG = dist.sample(np.random.default_rng([ctx.seed, i]), header["num_samples"])
            extra = {"exact_probs": outputs_NG.astype(np.float32), "exact_values_z": exact_values_S}
        result["splits"][split] = scores
        if parallel.is_main_process():
            np.savez_compressed(os.path.join(out_dir, f"predictions_{split}.npz"),
                                samples_z=samples_NG.astype(np.float32), greedy_z=greedy_N,
                                target_z=target_N, **extra)
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
