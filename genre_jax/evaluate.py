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
    header = {"method": method, "num_samples": cfg.num_samples, "temperature": cfg.temperature, "decode": decoding.how}
    tempering = cfg.calibration in ("temperature", "both") and "val" in cfg.splits
    if decoding.how == "exact":
        grid = [t for t in calibration.TEMPERATURES if t != cfg.temperature] if tempering else []
        decoder = ExactDecoder(ctx, params, (cfg.temperature, *grid))
    else:
        decoder = sampled_decoder(ctx, decode.predict_fn(ctx.model, ctx.tokenizer, ctx.mesh, "sample", cfg.num_samples),
                                  params)
    values_S = decoder.values_S if decoding.how == "exact" else None
    start = time.time()
    if tempering and values_S is not None:
        decoder.val_fit()  # first: it decides which temperature the other splits keep beside the evaluation's
    result, dists = score_splits(ctx, decoder, out_dir, header, values_S)
    if cfg.calibration != "none" and "val" in dists:
        fitted = calibrate(ctx, decoder, dists, values_S, cfg.calibration, decoding)
        calibration.save(out_dir, fitted)  # with the validation residuals, which results.json leaves out
        result["calibration"] = calibration.summary(fitted)
    result["wall_time_s"] = round(time.time() - start, 2)
    return result


def sampled_decoder(ctx, predict_fn, params):
    """decode_split(split, temperature) -> (samples_NG, point_N): ``predict_fn`` (params, x_BF, key,
    temperature) over a split's rows, with the split's key at every temperature."""
    def decode_split(split: str, temperature: float):
        return decode.decode_rows(predict_fn, params, ctx.arrays[split]["x"], _split_key(ctx, split),
                                  _batch_size(ctx), ctx.mesh, temperature)

    return decode_split


class ExactDecoder:
    """decode_split(split, temperature) -> (probs_NS over ``decode.support_z``, greedy_N) for exact
    evaluation: one decoder pass per split gives every temperature in ``temperatures`` (the tree's
    logits do not depend on T: ``exact.probs_at_temperatures``; one compiled program for every split
    and temperature). The validation split keeps every temperature (the calibration grid's fit,
    ``val_fit``); the others keep the first (the evaluation temperature) and, once the validation
    split is decoded, its CRPS-best one, so a calibrated test split costs no second pass. A
    temperature of ``temperatures`` that a split did not keep decodes the split again."""

    def __init__(self, ctx, params, temperatures):
        self.ctx, self.params, self.temperatures = ctx, params, tuple(float(t) for t in temperatures)
        self.values_S = decode.support_z(ctx.tokenizer)
        self._fn = _probs_at_temperatures_fn(ctx.model, ctx.tokenizer, ctx.mesh)
        self._kept, self._fit = {}, None

    def __call__(self, split: str, temperature: float):
        temperature = float(temperature)
        if temperature not in self.temperatures:
            raise ValueError(f"ExactDecoder: temperature {temperature:g} is not among those it decodes, "
                             f"{[f'{t:g}' for t in self.temperatures]}")
        kept = self._kept.get(split, ({}, None))[0]
        if temperature not in kept:
            keep = set(self.temperatures) if split == "val" else {self.temperatures[0], temperature, *kept}
            if self._fit is not None:
                keep.add(calibration.best_temperature(self._fit[1]))
            self._kept[split] = self._decode(split, sorted(keep))
        by_t, greedy_N = self._kept[split]
        return by_t[temperature], greedy_N

    def _decode(self, split: str, keep: list[float]):
        cols_K = jax.numpy.asarray([self.temperatures.index(t) for t in keep])

        def kept(params, x_BF, key, temperatures_J):  # every temperature decoded (one compiled shape), the
            probs_BJS, greedy_B = self._fn(params, x_BF, temperatures_J)  # kept ones leave the device; no draws
            return jax.numpy.take(probs_BJS, cols_K, axis=1), greedy_B

        probs_NKS, greedy_N = decode.decode_rows(kept, self.params, self.ctx.arrays[split]["x"],
                                                 _split_key(self.ctx, split), _batch_size(self.ctx), self.ctx.mesh,
                                                 self.temperatures)
        return {t: probs_NKS[:, k] for k, t in enumerate(keep)}, greedy_N

    def val_fit(self) -> tuple[dict, dict]:
        """({T: the validation split's exact distribution}, {T: its CRPS}) over the calibration grid."""
        if self._fit is None:
            by_t = {t: scores.Discrete(self.values_S, self("val", t)[0]) for t in calibration.TEMPERATURES}
            self._fit = by_t, {t: d.crps(self.ctx.arrays["val"]["z"]) for t, d in by_t.items()}
        return self._fit


def _batch_size(ctx) -> int:
    """Evaluation's rows per call, rounded up to a multiple of the devices (one compiled shape)."""
    return parallel.round_up(ctx.settings.eval.batch_size, ctx.mesh.size)


def _split_key(ctx, split: str):
    return split_key(ctx.seed, ctx.settings.eval.splits.index(split))


def split_key(seed: int, index: int):
    """The PRNG key of a split's decode (``index``: its place in eval.splits): the same at every
    temperature (common random numbers)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), index)


def calibrate(ctx, decode_split, dists: dict, exact_values_S, how: str, decoding=None) -> dict:
    """Fits the calibrations ``how`` asks for on the validation split (``calibration.py``) and scores
    them, and the raw distribution, on every evaluated split; ``decode_split``: ``sampled_decoder``'s
    or an ``ExactDecoder``. The conformal entry records ``decoding`` (how the mean its residuals are
    of was decoded), so a Predictor centres its intervals on the same predictor."""
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
        val_by_t, crps_by_t = (decode_split.val_fit() if exact_values_S is not None else
                               _sampled_val_fit(ctx, decode_split, dists["val"], targets["val"]))
        best = calibration.best_temperature(crps_by_t)
        evaluated_at = ctx.settings.eval.temperature  # dists were decoded there, with the same keys
        at_best = {s: val_by_t[best] if s == "val" else dists[s] if best == evaluated_at
                   else decode.distribution(decode_split(s, best)[0], exact_values_S) for s in dists}
        out["temperature"] = {"value": best, "criterion": "val_crps", "grid_top": max(calibration.TEMPERATURES),
                              "at_grid_top": calibration.at_grid_top(best),
                              "val_crps_by_temperature": {f"{t:g}": crps_by_t[t] for t in sorted(crps_by_t)},
                              "splits": {s: calibration.distribution_report(d, targets[s]) for s, d in at_best.items()}}
    return out


def _sampled_val_fit(ctx, decode_split, val_dist, val_z) -> tuple[dict, dict]:
    """({T: the validation split's sampled distribution}, {T: its CRPS}) at the temperatures
    ``calibration.descend_temperatures`` visits, one decode each with the same keys; ``val_dist``,
    decoded at the evaluation temperature, is reused there. (Exact: ``ExactDecoder.val_fit``, the whole
    grid from one decoder pass.)"""
    by_t = {ctx.settings.eval.temperature: val_dist}

    def crps_at(t):
        if t not in by_t:
            by_t[t] = decode.distribution(decode_split("val", t)[0])
        return by_t[t].crps(val_z)

    crps_by_t = calibration.descend_temperatures(crps_at, start=ctx.settings.eval.temperature)
    return by_t, crps_by_t


def score_splits(ctx, decode_split, out_dir: str, header: dict, exact_values_S=None):
    """Decodes the configured splits at the evaluation temperature (``decode_split(split, T)`` ->
    (samples_NG, point_N): ``sampled_decoder``; with ``exact_values_S``, an ``ExactDecoder``'s
    (probs_NS, greedy_N)) and scores them: the one evaluation loop behind every model kind (decoders,
    regression heads). Returns (results, {split: predictive distribution})."""
    start = time.time()
    result, dists = {**header, "splits": {}}, {}
    paths.makedirs(out_dir)
    for split in ctx.settings.eval.splits:
        split_arrays = ctx.arrays[split]
        outputs_NG, greedy_N = decode_split(split, header["temperature"])
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
    """Jitted (params, x_BF, temperatures_J) -> (probs_BJS, greedy_B): the exact distribution at every
    temperature, and the greedy value (z units) at the first."""

    def probs(params, x_BF, temperatures_J):
        probs_JBS, greedy_BL = exact.probs_at_temperatures(model, params, x_BF, tokenizer, temperatures_J)
        return jax.numpy.swapaxes(probs_JBS, 0, 1), tokenizer.decode(greedy_BL)

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
    return score_splits(ctx, sampled_decoder(ctx, predict_fn, params), out_dir, header)[0]


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
