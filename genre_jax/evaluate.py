"""Evaluation: G samples per input at a temperature, plus a greedy decode, scored in z units; or,
with ``eval.decode = exact`` (``auto``: when the tokenizer allows at most ``eval.exact_max_sequences``
sequences), the decoder's exact distribution over every sequence (``exact.py``).

Results per split: mean-, median- and greedy-aggregated metrics (``metrics.prediction_metrics``)
and the distribution's CRPS and 90% central-interval coverage. Raw predictions are saved as .npz
so later analyses (error vs number of samples, calibration) need no re-sampling; an exact
evaluation saves the probabilities too, and samples drawn from them. With ``eval.calibration``,
post-hoc calibrations fitted on the validation split are scored beside the raw distribution
(``calibration.py``).
"""
from __future__ import annotations

import io
import os
import time

import jax
import numpy as np

from genre_jax import calibration, decode, exact, heads, metrics, parallel, paths, scores


def evaluate(ctx, params, out_dir: str, method: str) -> dict:
    """Scores decoder ``params`` on the configured splits; writes predictions under ``out_dir``."""
    cfg = ctx.settings.eval
    decoding = decode.resolve(cfg.decode, ctx.tokenizer, cfg.num_samples, cfg.temperature, cfg.exact_max_sequences)
    predict_fn = decode.predict_fn(ctx.model, ctx.tokenizer, ctx.mesh, decoding.how, cfg.num_samples)
    header = {"method": method, "num_samples": cfg.num_samples, "temperature": cfg.temperature, "decode": decoding.how}
    values_S = decode.support_z(ctx.tokenizer) if decoding.how == "exact" else None
    start = time.time()
    result, dists = score_splits(ctx, predict_fn, params, out_dir, header, values_S)
    if cfg.calibration != "none" and "val" in dists:
        fitted = calibrate(ctx, predict_fn, params, dists, values_S, cfg.calibration, decoding)
        calibration.save(out_dir, fitted)  # with the validation residuals, which results.json leaves out
        result["calibration"] = calibration.summary(fitted)
    result["wall_time_s"] = round(time.time() - start, 2)
    return result


def _split_key(ctx, split: str):
    return split_key(ctx.seed, ctx.settings.eval.splits.index(split))


def split_key(seed: int, index: int):
    """The PRNG key of a split's decode (``index``: its place in eval.splits): the same at every
    temperature (common random numbers)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), index)


def calibrate(ctx, predict_fn, params, dists: dict, exact_values_S, how: str, decoding=None) -> dict:
    """Fits the calibrations ``how`` asks for on the validation split (``calibration.py``) and scores
    them, and the raw distribution, on every evaluated split. The conformal entry records ``decoding``
    (how the mean its residuals are of was decoded), so a Predictor centres its intervals on the same
    predictor."""
    targets = {split: ctx.arrays[split]["z"] for split in dists}
    out = {"levels": list(calibration.LEVELS), "fitted_on": "val",
           "raw": {s: calibration.distribution_report(d, targets[s]) for s, d in dists.items()}}
    if how in ("conformal", "both"):
        residuals = calibration.sorted_residuals(dists["val"].mean(), targets["val"])
        half = calibration.conformal_half_widths(residuals)
        out["conformal"] = {"point": "mean", **({"decoding": decoding.to_dict()} if decoding else {}), "half_width_z": half,
                            "residuals_z": [round(float(r), 6) for r in residuals],  # any level, at predict time
                            "splits": {s: calibration.conformal_report(d.mean(), targets[s], half)
                                       for s, d in dists.items()}}
    if how in ("temperature", "both"):
        val_by_t, crps_by_t = _val_distributions(ctx, predict_fn, params, exact_values_S, dists["val"], targets["val"])
        best = calibration.best_temperature(crps_by_t)
        evaluated_at = ctx.settings.eval.temperature  # dists were decoded there, with the same keys
        at_best = {s: val_by_t[best] if s == "val" else dists[s] if best == evaluated_at
                   else _decode(ctx, predict_fn, params, s, exact_values_S, best) for s in dists}
        out["temperature"] = {"value": best, "criterion": "val_crps", "grid_top": max(calibration.TEMPERATURES),
                              "at_grid_top": calibration.at_grid_top(best),
                              "val_crps_by_temperature": {f"{t:g}": crps_by_t[t] for t in sorted(crps_by_t)},
                              "splits": {s: calibration.distribution_report(d, targets[s]) for s, d in at_best.items()}}
    return out


def _decode(ctx, predict_fn, params, split: str, exact_values_S, temperature: float):
    batch_size = parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)
    outputs, _ = decode.decode_rows(predict_fn, params, ctx.arrays[split]["x"], _split_key(ctx, split), batch_size,
                               ctx.mesh, temperature)
    return decode.distribution(outputs, exact_values_S)


def _val_distributions(ctx, predict_fn, params, exact_values_S, val_dist, val_z) -> tuple[dict, dict]:
    """({T: the validation split's predictive distribution}, {T: its CRPS}) over the calibration grid.
    Exactly: every grid temperature in one decoder pass (the tree's logits do not depend on T;
    ``exact.probs_at_temperatures``). Sampled: one decode per temperature with the same keys, at the
    temperatures ``calibration.descend_temperatures`` visits; ``val_dist``, decoded at the evaluation
    temperature, is reused there."""
    if exact_values_S is None:
        by_t = {ctx.settings.eval.temperature: val_dist}

        def crps_at(t):
            if t not in by_t:
                by_t[t] = _decode(ctx, predict_fn, params, "val", None, t)
            return by_t[t].crps(val_z)

        crps_by_t = calibration.descend_temperatures(crps_at, start=ctx.settings.eval.temperature)
        return by_t, crps_by_t

    temperatures = calibration.TEMPERATURES
    probs_fn = _probs_at_temperatures_fn(ctx.model, ctx.tokenizer, ctx.mesh)
    batch_size = parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)
    temperatures_J = jax.numpy.asarray(temperatures, jax.numpy.float32)
    chunks = []
    for batch in parallel.padded_batches({"x": ctx.arrays["val"]["x"]}, batch_size):
        p = probs_fn(params, parallel.shard_batch(batch["x"], ctx.mesh), temperatures_J)
        chunks.append(parallel.to_host(p)[batch["weight"] > 0])
    probs_NJS = np.concatenate(chunks)
    by_t = {t: scores.Discrete(exact_values_S, probs_NJS[:, k]) for k, t in enumerate(temperatures)}
    return by_t, {t: d.crps(val_z) for t, d in by_t.items()}


def score_splits(ctx, predict_fn, params, out_dir: str, header: dict, exact_values_S=None):
    """Runs ``predict_fn`` (params, x_BF, key, temperature) -> (samples_BG, point_B) over the configured
    splits at the evaluation temperature and scores it: the one evaluation loop behind every model
    kind (decoders, regression heads). With ``exact_values_S`` the first output is each row's
    probability of those values instead. Returns (results, {split: predictive distribution})."""
    start = time.time()
    batch_size = parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)
    result, dists = {**header, "splits": {}}, {}
    paths.makedirs(out_dir)
    for split in ctx.settings.eval.splits:
        split_arrays = ctx.arrays[split]
        outputs_NG, greedy_N = decode.decode_rows(predict_fn, params, split_arrays["x"], _split_key(ctx, split),
                                             batch_size, ctx.mesh, header["temperature"])
        target_N, extra = split_arrays["z"], {}
        if exact_values_S is None:
            samples_NG = outputs_NG
            entry = metrics.prediction_metrics(samples_NG, greedy_N, target_N, ctx.y_std)
            entry["distribution"] = scores.distribution_scores(scores.Samples(samples_NG), target_N)
        else:
            dist = scores.Discrete(exact_values_S, outputs_NG)
            entry = scores.exact_prediction_metrics(dist, greedy_N, target_N, ctx.y_std)
            entry["distribution"] = scores.distribution_scores(dist, target_N)
            samples_NG = dist.sample(np.random.default_rng([ctx.seed, ctx.settings.eval.splits.index(split)]),
                                     header["num_samples"])
            extra = {"exact_probs": outputs_NG.astype(np.float32), "exact_values_z": exact_values_S}
        result["splits"][split] = entry
        dists[split] = decode.distribution(outputs_NG, exact_values_S)
        if parallel.is_main_process():  # built in memory: a bucket takes the file as one object write
            buffer = io.BytesIO()
            np.savez_compressed(buffer, samples_z=samples_NG.astype(np.float32), greedy_z=greedy_N,
                                target_z=target_N, **extra)
            paths.write(os.path.join(out_dir, f"predictions_{split}.npz"), buffer.getvalue())
    result["wall_time_s"] = round(time.time() - start, 2)
    return result, dists


@parallel.reused
def _probs_at_temperatures_fn(model, tokenizer, mesh):
    """Jitted (params, x_BF, temperatures_J) -> probs_BJS: the exact distribution at every temperature."""

    def probs(params, x_BF, temperatures_J):
        probs_JBS = exact.probs_at_temperatures(model, params, x_BF, tokenizer, temperatures_J)
        return jax.numpy.swapaxes(probs_JBS, 0, 1)

    return parallel.data_parallel(probs, mesh, batch_out=True)


def evaluate_head(ctx, params, model, out_dir: str) -> dict:
    """A regression head in the same schema: greedy = its point prediction, mean/median over its samples."""
    head = ctx.settings.head
    spec = head.method.spec
    edges_E, values_C = heads.bin_layout(head, ctx.arrays["train"]["z"])

    def predict(params, x_BF, key, temperature):  # heads have no temperature
        return heads.head_predict(spec, model, params, x_BF, key, head.num_samples, values_C, edges_E)

    predict_fn = parallel.data_parallel(predict, ctx.mesh, batch_out=True)
    header = {"method": head.method.name, "num_samples": head.num_samples, "temperature": 1.0}
    return score_splits(ctx, predict_fn, params, out_dir, header)[0]


def format_table(results: dict) -> str:
    """A small fixed-width table of every evaluated phase, split and aggregation."""
    cols = ("rmse", "mae", "r2", "spearman", "rmse_original")
    w = max([10, *(len(phase) + 2 for phase in results)])  # "genre2@aggregate_rmse" is wider than 10
    lines = [f"{'phase':<{w}}{'split':<6}{'agg':<8}" + "".join(f"{c:>14}" for c in cols)]
    for phase, res in results.items():
        for split, entry in res["splits"].items():
            for agg in metrics.AGGREGATIONS:
                lines.append(f"{phase:<{w}}{split:<6}{agg:<8}" + "".join(f"{entry[agg][c]:>14.4f}" for c in cols))
    calibrated = [(phase, res["calibration"]) for phase, res in results.items()
                  if "test" in res.get("calibration", {}).get("raw", {})]
    if calibrated:
        lines.append("test 90% interval coverage / CRPS (z): raw -> calibrated on val")
    for phase, cal in calibrated:
        raw = cal["raw"]["test"]
        parts = [f"raw {raw['coverage']['0.9']:.2f} / {raw['crps']:.4f}"]
        if "temperature" in cal:
            t = cal["temperature"]["splits"]["test"]
            parts.append(f"T={cal['temperature']['value']:g} {t['coverage']['0.9']:.2f} / {t['crps']:.4f}")
        if "conformal" in cal and cal["conformal"]["splits"]["test"]["coverage"]["0.9"] is not None:
            parts.append(f"conformal {cal['conformal']['splits']['test']['coverage']['0.9']:.2f}")
        lines.append(f"{phase:<{w}}" + "   ".join(parts))
    return "\n".join(lines)
