"""Exact-distribution evaluation against sampling: cost and Monte-Carlo error, on a trained checkpoint.

  python benchmarks/bench_exact.py --workdir runs/default --method genre2 --out benchmarks/results/exact_cpu.json

On the workdir's test split (its dataset, read through the checkpoint's own preprocessing), times
``exact.predict`` (every sequence of the tokenizer, 2^8 = 256 for the default job) against
``sampling.predict`` with G = 32, 128 and 512 samples (+ greedy), batch by batch as evaluation runs
them, and reports how far each sampled mean / median / CRPS lies from the exact value (the
Monte-Carlo error that exact evaluation removes), in z units.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from genre_jax import exact, metrics, sampling, scores  # noqa: E402
from genre_jax.data import load_for_config  # noqa: E402
from genre_jax.predictor import Predictor  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/default")
    ap.add_argument("--method", default="genre2")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/exact_cpu.json")
    args = ap.parse_args()
    with open(os.path.join(args.workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f)["config"])
    data = load_for_config(config)
    p = Predictor.from_workdir(args.workdir, args.method)
    x_NF, z_N = data.splits["test"].x[:args.batch], data.splits["test"].z[:args.batch]
    tok, model = p.tokenizer, p.model
    values_S = np.asarray(tok.decode(exact.all_sequences(tok)))
    exact_fn = jax.jit(lambda params, x: exact.predict(model, params, x, tok))
    seconds, (probs, greedy) = timed(lambda: exact_fn(p.params, x_NF), args.repeats)
    dist = scores.Discrete(values_S, np.asarray(probs))
    truth = {"mean": dist.mean(), "median": dist.quantile(0.5), "crps": dist.crps(z_N)}
    rows = [{"decode": "exact", "sequences": len(values_S), "batch_ms": seconds * 1e3,
             "test_rmse_mean": metrics.rmse(truth["mean"], z_N), "crps": truth["crps"]}]
    for g in (32, 128, 512):
        fn = jax.jit(lambda params, x, key, g=g: sampling.predict(model, params, x, key, tok, g))
        seconds, (samples, _) = timed(lambda: fn(p.params, x_NF, jax.random.key(0)), args.repeats)
        samples = np.asarray(samples, np.float64)
        rows.append({"decode": f"sample G={g}", "batch_ms": seconds * 1e3,
                     "test_rmse_mean": metrics.rmse(samples.mean(1), z_N), "crps": scores.crps(samples, z_N),
                     "mc_error_mean_rms": float(np.sqrt(np.mean((samples.mean(1) - truth["mean"]) ** 2))),
                     "mc_error_median_rms": float(np.sqrt(np.mean((np.median(samples, 1) - truth["median"]) ** 2))),
                     "mc_error_crps": scores.crps(samples, z_N) - truth["crps"]})
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "workdir": args.workdir,
              "method": args.method, "dataset": config.dataset, "rows_scored": int(len(z_N)),
              "devices": [str(d) for d in jax.devices()], "loadavg_end": os.getloadavg(), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print("| decode | ms per batch of", len(z_N), "| test RMSE (mean) | CRPS | RMS gap to the exact mean |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['decode']} | {r['batch_ms']:.1f} | {r['test_rmse_mean']:.4f} | {r['crps']:.4f} | "
              f"{r.get('mc_error_mean_rms', 0.0):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
